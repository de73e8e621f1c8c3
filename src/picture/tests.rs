use super::*;
use image::{Rgb, RgbImage};

/// A photograph-like test picture: a gradient, so JPEG has work to do.
pub(crate) fn gradient(width: u32, height: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(width, height, |x, y| {
        Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, 128])
    }))
}

fn jpeg(image: &DynamicImage) -> Vec<u8> {
    let mut out = Vec::new();
    image
        .write_with_encoder(JpegEncoder::new_with_quality(&mut out, 90))
        .unwrap();
    out
}

#[test]
fn exif_is_removed_and_the_orientation_applied() {
    // 40 wide, 20 high, stored sideways: orientation 6 says "turn 90° clockwise".
    let original = crate::picture::testdata::with_exif(&jpeg(&gradient(40, 20)), 6);
    assert!(original.windows(4).any(|w| w == b"Exif"));
    let prepared = prepare(&original).unwrap();
    assert_eq!(prepared.full.media_type, "image/jpeg");
    assert_eq!((prepared.full.width, prepared.full.height), (20, 40));
    let bytes = &prepared.full.bytes;
    assert!(!bytes.windows(4).any(|w| w == b"Exif"), "EXIF survived");
    assert!(!bytes.windows(4).any(|w| w == b"GPS "));
    assert!(prepared.thumbnail.is_none());
}

#[test]
fn a_large_picture_is_scaled_to_the_area_and_gets_a_thumbnail() {
    let prepared = prepare(&jpeg(&gradient(5000, 2500))).unwrap();
    let (w, h) = (prepared.full.width, prepared.full.height);
    assert!(u64::from(w) * u64::from(h) <= MAX_AREA);
    assert!(w > 4000 && (f64::from(w) / f64::from(h) - 2.0).abs() < 0.01);
    let thumb = prepared.thumbnail.unwrap();
    assert_eq!((thumb.width, thumb.height), (1200, 600));
}

#[test]
fn a_decompression_bomb_is_refused_from_its_header() {
    let bomb = crate::picture::testdata::png_header_only(100_000, 100_000);
    assert_eq!(
        prepare(&bomb).unwrap_err(),
        PictureError::TooManyPixels {
            width: 100_000,
            height: 100_000
        }
    );
}

#[test]
fn a_truncated_jpeg_is_refused() {
    let whole = jpeg(&gradient(300, 200));
    let err = prepare(&whole[..whole.len() / 2]).unwrap_err();
    assert!(
        matches!(err, PictureError::Damaged { format: "JPEG", .. }),
        "{err}"
    );
}

#[test]
fn html_is_not_a_picture_whatever_its_name() {
    let err = prepare(b"<!DOCTYPE html><html><body>hi</body></html>").unwrap_err();
    assert_eq!(err, PictureError::NotAPicture("an HTML page".into()));
    assert!(err.to_string().contains("JPEG, PNG, WebP and GIF"));
    assert_eq!(
        prepare(&vec![0u8; MAX_FILE + 1]).unwrap_err(),
        PictureError::TooLarge(MAX_FILE + 1)
    );
}

#[test]
fn png_stays_png_and_webp_becomes_jpeg() {
    let image = gradient(64, 32);
    let mut png = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
        .unwrap();
    let p = prepare(&png).unwrap();
    assert_eq!(
        (p.full.media_type, p.full.width, p.full.height),
        ("image/png", 64, 32)
    );
    let mut webp = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut webp), ImageFormat::WebP)
        .unwrap();
    let w = prepare(&webp).unwrap();
    assert_eq!(
        (w.full.media_type, w.full.width, w.full.height),
        ("image/jpeg", 64, 32)
    );
    let mut clear = Vec::new();
    DynamicImage::ImageRgba8(image.to_rgba8())
        .write_to(&mut Cursor::new(&mut clear), ImageFormat::WebP)
        .unwrap();
    // With an alpha channel, PNG keeps the transparency JPEG cannot.
    assert_eq!(prepare(&clear).unwrap().full.media_type, "image/png");
}

#[test]
fn an_animated_gif_keeps_its_frames() {
    let frames = (0..3).map(|i| {
        Frame::from_parts(
            image::RgbaImage::from_pixel(16, 8, image::Rgba([i * 80, 0, 0, 255])),
            0,
            0,
            image::Delay::from_numer_denom_ms(100, 1),
        )
    });
    let mut gif = Vec::new();
    {
        let mut encoder = image::codecs::gif::GifEncoder::new(&mut gif);
        encoder.encode_frames(frames).unwrap();
    }
    let p = prepare(&gif).unwrap();
    assert_eq!(
        (p.full.media_type, p.full.width, p.full.height),
        ("image/gif", 16, 8)
    );
    let decoder = image::codecs::gif::GifDecoder::new(Cursor::new(&p.full.bytes)).unwrap();
    assert_eq!(decoder.into_frames().count(), 3);
}

#[test]
fn an_avatar_is_the_centre_square() {
    let a = prepare_avatar(&jpeg(&gradient(600, 400))).unwrap();
    assert_eq!((a.width, a.height), (AVATAR_SIDE, AVATAR_SIDE));
    let small = prepare_avatar(&jpeg(&gradient(60, 40))).unwrap();
    assert_eq!((small.width, small.height), (40, 40));
}

#[test]
fn fitting_keeps_proportions() {
    assert_eq!(fit_area(3840, 2160, MAX_AREA), (3840, 2160));
    let (w, h) = fit_area(7680, 4320, MAX_AREA);
    assert!((3839..=3840).contains(&w) && (2159..=2160).contains(&h));
    assert_eq!(fit_side(2400, 1200, 1200), (1200, 600));
    assert_eq!(fit_side(10, 10_000, 1200), (1, 1200));
}

use image::{AnimationDecoder, Frame};
