//! Unsigned LEB128 integers up to `u32`, as used by the frame header.
//!
//! Seven value bits per byte, least significant group first, the high bit set on every byte but the last.
//! Decoding is strict: at most five bytes, no bits beyond 32, and no redundant trailing zero groups
//! (a value has exactly one encoding).

use bytes::BufMut;

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarintError {
    /// The input ended inside the integer.
    Truncated,
    /// More than 32 bits, or a redundant (non-minimal) encoding.
    Invalid,
}

/// Bytes needed to encode `v`.
#[inline]
pub const fn len(v: u32) -> usize {
    match v {
        0..=0x7F => 1,
        0x80..=0x3FFF => 2,
        0x4000..=0x1F_FFFF => 3,
        0x20_0000..=0x0FFF_FFFF => 4,
        _ => 5,
    }
}

/// Appends `v` to `out`.
#[inline]
pub fn put(out: &mut impl BufMut, mut v: u32) {
    while v >= 0x80 {
        out.put_u8((v as u8 & 0x7F) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// Reads a varint at `*pos` in `buf`, advancing `*pos` past it.
#[inline]
pub fn get(buf: &[u8], pos: &mut usize) -> Result<u32, VarintError> {
    let mut value: u32 = 0;
    for i in 0..5 {
        let Some(&b) = buf.get(*pos + i) else {
            return Err(VarintError::Truncated);
        };
        let group = u32::from(b & 0x7F);
        if i == 4 && b > 0x0F {
            return Err(VarintError::Invalid);
        }
        value |= group << (7 * i);
        if b & 0x80 == 0 {
            if i > 0 && b == 0 {
                return Err(VarintError::Invalid);
            }
            *pos += i + 1;
            return Ok(value);
        }
    }
    Err(VarintError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn boundaries() {
        for (v, n) in [
            (0, 1),
            (127, 1),
            (128, 2),
            (16383, 2),
            (16384, 3),
            (0x1F_FFFF, 3),
            (0x20_0000, 4),
            (0x0FFF_FFFF, 4),
            (0x1000_0000, 5),
            (u32::MAX, 5),
        ] {
            let mut b = Vec::new();
            put(&mut b, v);
            assert_eq!(b.len(), n, "length of {v}");
            assert_eq!(len(v), n);
            let mut pos = 0;
            assert_eq!(get(&b, &mut pos), Ok(v));
            assert_eq!(pos, n);
        }
    }

    #[test]
    fn rejects_bad_encodings() {
        let mut pos = 0;
        assert_eq!(get(&[0x80], &mut pos), Err(VarintError::Truncated));
        assert_eq!(get(&[], &mut pos), Err(VarintError::Truncated));
        // 0 encoded in two bytes
        assert_eq!(get(&[0x80, 0x00], &mut pos), Err(VarintError::Invalid));
        // 33 bits
        assert_eq!(get(&[0xFF, 0xFF, 0xFF, 0xFF, 0x1F], &mut pos), Err(VarintError::Invalid));
        // six bytes
        assert_eq!(get(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01], &mut pos), Err(VarintError::Invalid));
        assert_eq!(pos, 0, "position untouched on error");
    }

    proptest! {
        #[test]
        fn round_trip(v in any::<u32>()) {
            let mut b = Vec::new();
            put(&mut b, v);
            let mut pos = 0;
            prop_assert_eq!(get(&b, &mut pos), Ok(v));
            prop_assert_eq!(pos, len(v));
        }

        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..8)) {
            let mut pos = 0;
            let _ = get(&b, &mut pos);
        }
    }
}
