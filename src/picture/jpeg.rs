//! Whether a JPEG file is whole. The JPEG decoder forgives a file cut
//! short (it fills what is missing with grey), so a picture whose upload
//! broke off would be signed half grey, forever. This walks the file's
//! segments from the start-of-image marker to the end-of-image marker,
//! through every scan's entropy-coded data, and refuses a file that ends
//! before it.

use super::PictureError;

fn damaged(reason: &str) -> PictureError {
    PictureError::Damaged {
        format: "JPEG",
        reason: reason.into(),
    }
}

/// Ok when `bytes` run from SOI to EOI through whole segments. Bytes after
/// the EOI (some cameras append a preview there) are allowed: the decoder
/// never reads them, and re-encoding drops them.
pub fn check_whole(bytes: &[u8]) -> Result<(), PictureError> {
    if !bytes.starts_with(&[0xff, 0xd8]) {
        return Err(damaged("no start-of-image marker"));
    }
    let cut = || damaged("the file ends before its end-of-image marker");
    let mut at = 2;
    loop {
        // A marker: 0xFF (fill bytes 0xFF may repeat), then its code.
        if *bytes.get(at).ok_or_else(cut)? != 0xff {
            return Err(damaged("a segment does not start with a marker"));
        }
        while bytes.get(at) == Some(&0xff) {
            at += 1;
        }
        let code = *bytes.get(at).ok_or_else(cut)?;
        at += 1;
        match code {
            0xd9 => return Ok(()),
            0x01 | 0xd0..=0xd7 => continue,
            _ => {}
        }
        let len = bytes.get(at..at + 2).ok_or_else(cut)?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if len < 2 {
            return Err(damaged("a segment length under 2"));
        }
        at = at
            .checked_add(len)
            .filter(|&end| end <= bytes.len())
            .ok_or_else(cut)?;
        if code == 0xda {
            // Entropy-coded data runs to the next marker that is neither
            // a stuffed 0xFF00 nor a restart marker.
            loop {
                let ff = at + memchr_ff(&bytes[at..]).ok_or_else(cut)?;
                match *bytes.get(ff + 1).ok_or_else(cut)? {
                    0x00 | 0xd0..=0xd7 | 0xff => at = ff + 1,
                    _ => {
                        at = ff;
                        break;
                    }
                }
            }
        }
    }
}

fn memchr_ff(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == 0xff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_files_pass() {
        let mut out = Vec::new();
        let image = crate::picture::tests::gradient(64, 48);
        image
            .write_with_encoder(image::codecs::jpeg::JpegEncoder::new(&mut out))
            .unwrap();
        check_whole(&out).unwrap();
        for cut in [2, 3, 20, out.len() / 2, out.len() - 1] {
            assert!(check_whole(&out[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailer = out.clone();
        trailer.extend_from_slice(b"preview");
        check_whole(&trailer).unwrap();
    }
}
