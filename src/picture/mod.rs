//! Pictures: what an image a person attaches becomes before it is signed.
//!
//! The bytes are recognised by their content (JPEG, PNG, WebP or GIF; a
//! file name says nothing), decoded within a size and pixel budget checked
//! against the header before any pixel is allocated, turned the way its
//! EXIF orientation says, scaled down when larger than [`MAX_AREA`], and
//! encoded afresh. Encoding afresh is what removes the metadata: the
//! encoders write pixels and the colour profile, nothing else, so EXIF (GPS
//! above all), XMP and comments cannot survive in any form a parser of ours
//! might have missed. JPEG stays JPEG (quality [`JPEG_QUALITY`]), PNG stays
//! PNG, GIF stays GIF with its animation; WebP, for which no pure-Rust lossy
//! encoder is well kept, becomes JPEG (or PNG when it has transparency).
//!
//! Decoding uses the `image` crate (zune-jpeg, png, image-webp and gif
//! underneath): pure Rust, fuzzed upstream, and with [`image::Limits`]
//! checked before allocation.

mod animation;
mod jpeg;
pub mod testdata;

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{CompressionType, FilterType as PngFilter, PngEncoder};
use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageEncoder, ImageFormat, ImageReader, Limits};

/// The largest file taken, in bytes.
pub const MAX_FILE: usize = 16 << 20;

/// The most pixels decoded (width × height, summed over a GIF's frames): a
/// 48-megapixel phone photograph (8064 × 6048) fits; a decompression bomb
/// declaring 100,000 × 100,000 is refused from its header. Decoded as RGBA,
/// 52 million pixels are 208 MB, the most one picture costs at once.
pub const MAX_PIXELS: u64 = 52_000_000;

/// Pictures larger than this in area (3840 × 2160, a 4K screen) are scaled
/// down to it, keeping their proportions.
pub const MAX_AREA: u64 = 3840 * 2160;

/// Pictures whose longer side is over this get a thumbnail of this size
/// for the pages: 2 × the 600 CSS pixels a post is wide.
pub const THUMBNAIL_SIDE: u32 = 1200;

/// A profile picture is a square of this side.
pub const AVATAR_SIDE: u32 = 256;

/// JPEG quality of re-encoded photographs: above 80 the loss is not seen
/// at normal viewing; 85 keeps files near their original size.
pub const JPEG_QUALITY: u8 = 85;

/// The media types a picture can have once prepared, and the only ones the
/// gateway serves inline.
pub const MEDIA_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];

/// Why a file is not taken as a picture. Each message says what to do.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PictureError {
    /// Over [`MAX_FILE`].
    #[error("the file is {0} bytes; pictures are taken up to 16 MiB")]
    TooLarge(usize),
    /// Not one of the four formats.
    #[error("this is {0}, not a picture: Capsule takes JPEG, PNG, WebP and GIF")]
    NotAPicture(String),
    /// The header declares more pixels than [`MAX_PIXELS`].
    #[error(
        "the picture declares {width} × {height} pixels, over the limit of {MAX_PIXELS}; scale it down first"
    )]
    TooManyPixels {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
    },
    /// The bytes do not decode (truncated, damaged).
    #[error("the {format} file cannot be read ({reason}); is it whole?")]
    Damaged {
        /// JPEG, PNG, WebP or GIF.
        format: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// Encoding failed (not expected for pixels that decoded).
    #[error("the picture could not be encoded: {0}")]
    Encode(String),
}

/// One prepared image: the bytes to keep and sign a reference to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// The encoded bytes.
    pub bytes: Vec<u8>,
    /// One of [`MEDIA_TYPES`].
    pub media_type: &'static str,
    /// Width in pixels, as it stands.
    pub width: u32,
    /// Height in pixels, as it stands.
    pub height: u32,
}

/// A picture ready to be attached: the picture, and a smaller copy for the
/// pages when it is large.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The picture.
    pub full: Encoded,
    /// A copy whose longer side is [`THUMBNAIL_SIDE`], when the picture is
    /// larger and still.
    pub thumbnail: Option<Encoded>,
}

/// Recognises `bytes` by content; the format, or why it is not a picture.
pub fn sniff(bytes: &[u8]) -> Result<ImageFormat, PictureError> {
    if bytes.len() > MAX_FILE {
        return Err(PictureError::TooLarge(bytes.len()));
    }
    match image::guess_format(bytes) {
        Ok(f @ (ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP | ImageFormat::Gif)) => {
            Ok(f)
        }
        Ok(other) => Err(PictureError::NotAPicture(format!(
            "a {} image",
            other
                .extensions_str()
                .first()
                .unwrap_or(&"?")
                .to_uppercase()
        ))),
        Err(_) => Err(PictureError::NotAPicture(describe_other(bytes))),
    }
}

/// A few words on what bytes that are no picture seem to be.
fn describe_other(bytes: &[u8]) -> String {
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).to_ascii_lowercase();
    let head = head.trim_start_matches('\u{feff}').trim_start();
    if bytes.is_empty() {
        "an empty file".into()
    } else if head.starts_with("<!doctype html") || head.starts_with("<html") {
        "an HTML page".into()
    } else if head.starts_with("<?xml") || head.starts_with("<svg") {
        "an XML or SVG file".into()
    } else if std::str::from_utf8(bytes).is_ok() {
        "a text file".into()
    } else {
        format!(
            "a file starting {}",
            hex::encode(&bytes[..bytes.len().min(8)])
        )
    }
}

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Png => "PNG",
        ImageFormat::WebP => "WebP",
        _ => "GIF",
    }
}

fn limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_PIXELS * 4 + (64 << 20));
    limits
}

/// Checks a header's declared size against [`MAX_PIXELS`].
fn check_pixels(width: u32, height: u32, frames: u64) -> Result<(), PictureError> {
    if u64::from(width) * u64::from(height) * frames.max(1) > MAX_PIXELS {
        return Err(PictureError::TooManyPixels { width, height });
    }
    Ok(())
}

/// A still picture decoded and turned upright, with its colour profile.
struct Decoded {
    image: DynamicImage,
    icc: Option<Vec<u8>>,
}

fn decode_still(bytes: &[u8], format: ImageFormat) -> Result<Decoded, PictureError> {
    if format == ImageFormat::Jpeg {
        jpeg::check_whole(bytes)?;
    }
    let damaged = |e: image::ImageError| PictureError::Damaged {
        format: format_name(format),
        reason: e.to_string(),
    };
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(limits());
    let mut decoder = reader.into_decoder().map_err(damaged)?;
    let (width, height) = decoder.dimensions();
    check_pixels(width, height, 1)?;
    let icc = decoder.icc_profile().ok().flatten();
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| match e {
        image::ImageError::Limits(_) => PictureError::TooManyPixels { width, height },
        e => damaged(e),
    })?;
    image.apply_orientation(orientation);
    Ok(Decoded { image, icc })
}

/// The size `(width, height)` scaled to fit `area` pixels, proportions kept.
pub fn fit_area(width: u32, height: u32, area: u64) -> (u32, u32) {
    let have = u64::from(width) * u64::from(height);
    if have <= area {
        return (width, height);
    }
    let scale = (area as f64 / have as f64).sqrt();
    let w = ((f64::from(width) * scale).floor() as u32).max(1);
    let h = ((f64::from(height) * scale).floor() as u32).max(1);
    (w, h)
}

/// The size `(width, height)` scaled so the longer side is at most `side`.
pub fn fit_side(width: u32, height: u32, side: u32) -> (u32, u32) {
    let longer = width.max(height);
    if longer <= side {
        return (width, height);
    }
    let scale = f64::from(side) / f64::from(longer);
    (
        ((f64::from(width) * scale).round() as u32).clamp(1, side),
        ((f64::from(height) * scale).round() as u32).clamp(1, side),
    )
}

fn scaled(image: &DynamicImage, (w, h): (u32, u32)) -> DynamicImage {
    if (w, h) == (image.width(), image.height()) {
        return image.clone();
    }
    image.resize_exact(w, h, FilterType::CatmullRom)
}

/// Encodes a still picture: PNG when `lossless` or it has transparency,
/// JPEG otherwise, with its colour profile.
fn encode_still(
    image: &DynamicImage,
    icc: Option<&[u8]>,
    lossless: bool,
) -> Result<Encoded, PictureError> {
    let err = |e: image::ImageError| PictureError::Encode(e.to_string());
    let mut bytes = Vec::new();
    let media_type = if lossless || image.color().has_alpha() {
        let mut encoder =
            PngEncoder::new_with_quality(&mut bytes, CompressionType::Default, PngFilter::Adaptive);
        if let Some(icc) = icc {
            let _ = encoder.set_icc_profile(icc.to_vec());
        }
        image.write_with_encoder(encoder).map_err(err)?;
        "image/png"
    } else {
        let mut encoder = JpegEncoder::new_with_quality(&mut bytes, JPEG_QUALITY);
        if let Some(icc) = icc {
            let _ = encoder.set_icc_profile(icc.to_vec());
        }
        let rgb = match image {
            DynamicImage::ImageLuma8(_) => image.clone(),
            _ => DynamicImage::ImageRgb8(image.to_rgb8()),
        };
        rgb.write_with_encoder(encoder).map_err(err)?;
        "image/jpeg"
    };
    Ok(Encoded {
        bytes,
        media_type,
        width: image.width(),
        height: image.height(),
    })
}

/// Prepares an attachment: see the module documentation.
pub fn prepare(bytes: &[u8]) -> Result<Prepared, PictureError> {
    let format = sniff(bytes)?;
    if format == ImageFormat::Gif {
        let full = animation::reencode(bytes)?;
        return Ok(Prepared {
            full,
            thumbnail: None,
        });
    }
    let Decoded { image, icc } = decode_still(bytes, format)?;
    let image = scaled(&image, fit_area(image.width(), image.height(), MAX_AREA));
    let lossless = format == ImageFormat::Png;
    let full = encode_still(&image, icc.as_deref(), lossless)?;
    let thumb_size = fit_side(image.width(), image.height(), THUMBNAIL_SIDE);
    let thumbnail = if thumb_size != (image.width(), image.height()) {
        // Thumbnails of photographs are JPEG whatever the original was:
        // a PNG photograph's thumbnail would weigh as much as the page.
        let small = scaled(&image, thumb_size);
        Some(encode_still(&small, icc.as_deref(), false)?)
    } else {
        None
    };
    Ok(Prepared { full, thumbnail })
}

/// Prepares a profile picture: the centre square, [`AVATAR_SIDE`] wide.
pub fn prepare_avatar(bytes: &[u8]) -> Result<Encoded, PictureError> {
    let format = sniff(bytes)?;
    let Decoded { image, icc } = if format == ImageFormat::Gif {
        Decoded {
            image: animation::first_frame(bytes)?,
            icc: None,
        }
    } else {
        decode_still(bytes, format)?
    };
    let side = image.width().min(image.height());
    let square = image.crop_imm(
        (image.width() - side) / 2,
        (image.height() - side) / 2,
        side,
        side,
    );
    let target = side.min(AVATAR_SIDE);
    let small = scaled(&square, (target, target));
    encode_still(&small, icc.as_deref(), false)
}

#[cfg(test)]
mod tests;
