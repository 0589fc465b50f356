//! Reads what the tests check of an AVIF file without an AV1 decoder: the ISO-BMFF boxes (`ftyp` brands, the
//! `ispe` image size of every item, the `av1C` codec configuration, an alpha auxiliary image). No pure-Rust AV1
//! decoder builds in reasonable time here; pixels are checked by `benches/formats.py` (SSIM/PSNR after decoding
//! with libavif through Pillow).

/// What the container says about an AVIF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvifInfo {
    /// `ftyp`'s major brand.
    pub major_brand: [u8; 4],
    /// `ftyp`'s compatible brands.
    pub compatible: Vec<[u8; 4]>,
    /// Every `ispe` (image spatial extents) property, in order (an alpha image of the same size shares the
    /// colour image's).
    pub sizes: Vec<(u32, u32)>,
    /// Whether an `av1C` (AV1 codec configuration) property is present.
    pub av1_config: bool,
    /// Whether an auxiliary image is declared as alpha (`auxC` with the MPEG alpha URN).
    pub alpha: bool,
    /// Length of the `mdat` payload (the AV1 data).
    pub media_bytes: usize,
}

impl AvifInfo {
    /// The colour image's size (the first `ispe`).
    pub fn size(&self) -> Option<(u32, u32)> {
        self.sizes.first().copied()
    }

    /// Whether `brand` is the major or a compatible brand.
    pub fn has_brand(&self, brand: [u8; 4]) -> bool {
        self.major_brand == brand || self.compatible.contains(&brand)
    }
}

const ALPHA_URN: &[u8] = b"urn:mpeg:mpegB:cicp:systems:auxiliary:alpha";

/// A box: its four-character type and its payload.
type Bmff<'a> = ([u8; 4], &'a [u8]);

/// Splits `bytes` into its boxes.
fn boxes(mut bytes: &[u8]) -> Result<Vec<Bmff<'_>>, String> {
    let mut found = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 8 {
            return Err(format!("{} trailing bytes are not a box header", bytes.len()));
        }
        let size = u32::from_be_bytes(bytes[0..4].try_into().unwrap()) as u64;
        let kind: [u8; 4] = bytes[4..8].try_into().unwrap();
        let (header, size) = match size {
            0 => (8, bytes.len() as u64),
            1 => {
                let large = bytes.get(8..16).ok_or("truncated 64-bit box size")?;
                (16, u64::from_be_bytes(large.try_into().unwrap()))
            }
            size => (8, size),
        };
        let size = usize::try_from(size).map_err(|_| "box size overflows")?;
        if size < header || size > bytes.len() {
            return Err(format!("box {:?} claims {size} bytes, {} left", String::from_utf8_lossy(&kind), bytes.len()));
        }
        found.push((kind, &bytes[header..size]));
        bytes = &bytes[size..];
    }
    Ok(found)
}

fn only<'a>(list: &[Bmff<'a>], kind: [u8; 4]) -> Result<&'a [u8], String> {
    let mut matching = list.iter().filter(|(k, _)| *k == kind);
    let first = matching.next().ok_or_else(|| format!("no {:?} box", String::from_utf8_lossy(&kind)))?;
    if matching.next().is_some() {
        return Err(format!("more than one {:?} box", String::from_utf8_lossy(&kind)));
    }
    Ok(first.1)
}

/// Parses the boxes of an AVIF still image; an error says what is missing or malformed.
pub fn parse(bytes: &[u8]) -> Result<AvifInfo, String> {
    let top = boxes(bytes)?;
    if top.first().map(|(kind, _)| kind) != Some(b"ftyp") {
        return Err("the file does not start with an ftyp box".to_owned());
    }
    let ftyp = only(&top, *b"ftyp")?;
    if ftyp.len() < 8 || !(ftyp.len() - 8).is_multiple_of(4) {
        return Err(format!("ftyp payload of {} bytes", ftyp.len()));
    }
    let major_brand = ftyp[0..4].try_into().unwrap();
    let compatible = ftyp[8..].chunks_exact(4).map(|brand| brand.try_into().unwrap()).collect();
    // meta is a full box: version and flags before its children.
    let meta = only(&top, *b"meta")?.get(4..).ok_or("empty meta box")?;
    let meta = boxes(meta)?;
    let iprp = boxes(only(&meta, *b"iprp")?)?;
    let ipco = boxes(only(&iprp, *b"ipco")?)?;
    let mut sizes = Vec::new();
    let mut av1_config = false;
    let mut alpha = false;
    for (kind, payload) in &ipco {
        match kind {
            // ispe is a full box: version and flags, then width and height.
            b"ispe" => {
                let extents = payload.get(4..12).ok_or("truncated ispe")?;
                let width = u32::from_be_bytes(extents[0..4].try_into().unwrap());
                let height = u32::from_be_bytes(extents[4..8].try_into().unwrap());
                sizes.push((width, height));
            }
            b"av1C" => av1_config = payload.first().is_some_and(|marker| marker & 0x80 != 0),
            b"auxC" => alpha |= payload.get(4..).is_some_and(|urn| urn.starts_with(ALPHA_URN)),
            _ => {}
        }
    }
    let media_bytes = only(&top, *b"mdat")?.len();
    Ok(AvifInfo { major_brand, compatible, sizes, av1_config, alpha, media_bytes })
}
