//! The in-memory pixel buffer every step passes along: tightly packed 8-bit RGB or RGBA rows.

use super::TransformError;

/// A packed 8-bit image: `data.len() == width * height * channels`, rows top to bottom, no padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bitmap {
    /// Width in pixels (at least 1).
    pub width: u32,
    /// Height in pixels (at least 1).
    pub height: u32,
    /// 3 (RGB) or 4 (RGBA, straight alpha).
    pub channels: usize,
    /// The pixels.
    pub data: Vec<u8>,
}

impl Bitmap {
    /// Wraps decoded pixels, refusing a buffer whose length does not match (a decoder bug must not become an
    /// out-of-bounds index further down).
    pub fn new(width: u32, height: u32, channels: usize, data: Vec<u8>) -> Result<Bitmap, TransformError> {
        let expected = (width as usize).checked_mul(height as usize).and_then(|p| p.checked_mul(channels));
        if width == 0 || height == 0 || !(channels == 3 || channels == 4) || expected != Some(data.len()) {
            return Err(TransformError::Undecodable(format!(
                "decoder returned {} bytes for {width}x{height}x{channels}",
                data.len()
            )));
        }
        Ok(Bitmap { width, height, channels, data })
    }

    /// A `width` x `height` image filled with one colour (`rgba[3]` is dropped for 3 channels).
    pub fn filled(width: u32, height: u32, channels: usize, rgba: [u8; 4]) -> Bitmap {
        let pixel = &rgba[..channels.min(4)];
        let data = pixel.repeat(width as usize * height as usize);
        Bitmap { width, height, channels, data }
    }

    /// Whether there is an alpha channel.
    pub fn has_alpha(&self) -> bool {
        self.channels == 4
    }

    /// Bytes per row.
    pub fn stride(&self) -> usize {
        self.width as usize * self.channels
    }

    /// Adds an opaque alpha channel (for padding with a translucent background).
    pub fn into_rgba(self) -> Bitmap {
        if self.channels == 4 {
            return self;
        }
        let mut data = Vec::with_capacity(self.data.len() / 3 * 4);
        for pixel in self.data.chunks_exact(3) {
            data.extend_from_slice(pixel);
            data.push(255);
        }
        Bitmap { width: self.width, height: self.height, channels: 4, data }
    }

    /// Drops the alpha channel by compositing onto `background` (JPEG has no alpha; without this, transparent
    /// pixels would show whatever colour they happen to store, often black).
    pub fn flatten(self, background: [u8; 4]) -> Bitmap {
        if self.channels == 3 {
            return self;
        }
        let mut data = Vec::with_capacity(self.data.len() / 4 * 3);
        for pixel in self.data.chunks_exact(4) {
            let alpha = u32::from(pixel[3]);
            for (&channel, &back) in pixel[..3].iter().zip(&background[..3]) {
                let mixed = u32::from(channel) * alpha + u32::from(back) * (255 - alpha);
                data.push(((mixed + 127) / 255) as u8);
            }
        }
        Bitmap { width: self.width, height: self.height, channels: 3, data }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_refuses_mismatched_buffers() {
        assert!(Bitmap::new(2, 2, 3, vec![0; 12]).is_ok());
        assert!(Bitmap::new(2, 2, 3, vec![0; 11]).is_err());
        assert!(Bitmap::new(0, 2, 3, vec![]).is_err());
        assert!(Bitmap::new(1, 1, 2, vec![0; 2]).is_err());
    }

    #[test]
    fn flatten_mixes_with_the_background() {
        let image = Bitmap::new(2, 1, 4, vec![0, 0, 0, 0, 10, 20, 30, 255]).expect("valid");
        let flat = image.flatten([255, 0, 0, 255]);
        assert_eq!(flat.data, vec![255, 0, 0, 10, 20, 30]);
        let half = Bitmap::new(1, 1, 4, vec![0, 0, 0, 128]).expect("valid").flatten([255, 255, 255, 255]);
        assert_eq!(half.data, vec![127, 127, 127]);
    }
}
