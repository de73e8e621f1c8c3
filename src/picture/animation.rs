//! GIF pictures, animated or not: every frame decoded within the pixel
//! budget (the frames of one GIF share [`MAX_PIXELS`](super::MAX_PIXELS)),
//! scaled like a still picture, and encoded afresh: the encoder writes the
//! frames and the loop count, and no comment or application block.

use std::io::Cursor;

use image::codecs::gif::{GifDecoder, GifEncoder, Repeat};
use image::{AnimationDecoder, DynamicImage, Frame, ImageDecoder};

use super::{Encoded, MAX_AREA, PictureError, check_pixels, fit_area};

/// Frames kept at most: past a few hundred, a GIF is a video.
pub const MAX_FRAMES: usize = 500;

fn damaged(e: image::ImageError) -> PictureError {
    PictureError::Damaged {
        format: "GIF",
        reason: e.to_string(),
    }
}

fn decoder(bytes: &[u8]) -> Result<GifDecoder<Cursor<&[u8]>>, PictureError> {
    let mut decoder = GifDecoder::new(Cursor::new(bytes)).map_err(damaged)?;
    let (width, height) = decoder.dimensions();
    check_pixels(width, height, 1)?;
    decoder.set_limits(super::limits()).map_err(damaged)?;
    Ok(decoder)
}

/// The frames of a GIF, each the whole canvas, refused past the budget.
fn frames(bytes: &[u8]) -> Result<(Vec<Frame>, u32, u32), PictureError> {
    let decoder = decoder(bytes)?;
    let (width, height) = decoder.dimensions();
    let mut frames = Vec::new();
    for frame in decoder.into_frames() {
        frames.push(frame.map_err(damaged)?);
        check_pixels(width, height, frames.len() as u64)?;
        if frames.len() > MAX_FRAMES {
            return Err(PictureError::Damaged {
                format: "GIF",
                reason: format!("more than {MAX_FRAMES} frames"),
            });
        }
    }
    if frames.is_empty() {
        return Err(PictureError::Damaged {
            format: "GIF",
            reason: "no frame".into(),
        });
    }
    Ok((frames, width, height))
}

/// The first frame, for a profile picture.
pub fn first_frame(bytes: &[u8]) -> Result<DynamicImage, PictureError> {
    let decoder = decoder(bytes)?;
    let frame = decoder
        .into_frames()
        .next()
        .ok_or_else(|| PictureError::Damaged {
            format: "GIF",
            reason: "no frame".into(),
        })?
        .map_err(damaged)?;
    Ok(DynamicImage::ImageRgba8(frame.into_buffer()))
}

/// The GIF encoded afresh, scaled to [`MAX_AREA`] if larger, looping
/// forever as browsers play it.
pub fn reencode(bytes: &[u8]) -> Result<Encoded, PictureError> {
    let (frames, width, height) = frames(bytes)?;
    let (w, h) = fit_area(width, height, MAX_AREA);
    let frames: Vec<Frame> = frames
        .into_iter()
        .map(|frame| {
            if (w, h) == (width, height) {
                return frame;
            }
            let delay = frame.delay();
            let small = image::imageops::resize(
                frame.buffer(),
                w,
                h,
                image::imageops::FilterType::Triangle,
            );
            Frame::from_parts(small, 0, 0, delay)
        })
        .collect();
    let mut out = Vec::new();
    {
        let mut encoder = GifEncoder::new_with_speed(&mut out, 10);
        let err = |e: image::ImageError| PictureError::Encode(e.to_string());
        if frames.len() > 1 {
            encoder.set_repeat(Repeat::Infinite).map_err(err)?;
        }
        encoder.encode_frames(frames).map_err(err)?;
    }
    Ok(Encoded {
        bytes: out,
        media_type: "image/gif",
        width: w,
        height: h,
    })
}
