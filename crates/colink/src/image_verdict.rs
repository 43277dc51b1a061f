//! Image verdicts (the wire codec): the receiver's answer to each image, on its own IMAGE lane back to the
//! sender (docs/media.md §3.4), so `send_image` resolves only once the peer's app can have the picture, and
//! fails with the peer's reason when the peer refused it.
//!
//! ```text
//! offset  size  field
//! 0       1     type = 0x80 (image payloads start with the media version, 1, so the two never collide)
//! 1       1     status: 0 delivered (checked, decoded, queued for the app), 1 refused
//! 2       8     tag: the first 8 bytes (big-endian) of the SHA-256 of the image payload it answers
//! 10      n     reason: UTF-8, at most 256 bytes (empty when delivered); a peer string, escape it to print
//! ```

use bytes::{BufMut, Bytes, BytesMut};
use sha2::{Digest, Sha256};

/// The first byte of a verdict on the IMAGE lane.
pub const IMAGE_VERDICT: u8 = 0x80;

/// The longest refusal reason a verdict carries, in bytes (a longer one is cut at a character boundary).
pub const MAX_VERDICT_REASON: usize = 256;

/// Fixed bytes before the reason.
const FIXED: usize = 10;

/// The receiver's answer to one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageVerdict {
    /// Which image it answers: [`ImageVerdict::tag`] of the image payload.
    pub tag: u64,
    /// `None` when the image was delivered; the receiver's reason when it refused it.
    pub refused: Option<String>,
}

/// Why bytes on the IMAGE lane are not a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerdictError {
    /// Not a verdict at all (an image payload, or nothing).
    #[error("not an image verdict")]
    NotAVerdict,
    /// Shorter than the fixed fields.
    #[error("image verdict truncated")]
    Truncated,
    /// A status other than 0 or 1, a reason on a delivered verdict, or a reason that is too long or not UTF-8.
    #[error("malformed image verdict")]
    Malformed,
}

impl ImageVerdict {
    /// The tag of an image payload (header and JPEG, as sent on the lane).
    pub fn tag(image_payload: &[u8]) -> u64 {
        let digest = Sha256::digest(image_payload);
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(first)
    }

    /// Whether an IMAGE-lane payload is a verdict (rather than an image).
    pub fn is_verdict(payload: &[u8]) -> bool {
        payload.first() == Some(&IMAGE_VERDICT)
    }

    /// The verdict "delivered" for the image payload `image`.
    pub fn delivered(image: &[u8]) -> Self {
        Self { tag: Self::tag(image), refused: None }
    }

    /// The verdict "refused because `reason`" for the image payload `image` (the reason is cut to
    /// [`MAX_VERDICT_REASON`] bytes).
    pub fn refused(image: &[u8], reason: &str) -> Self {
        let mut end = reason.len().min(MAX_VERDICT_REASON);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        Self { tag: Self::tag(image), refused: Some(reason[..end].to_owned()) }
    }

    /// The wire form.
    pub fn encode(&self) -> Bytes {
        let reason = self.refused.as_deref().unwrap_or("");
        let mut b = BytesMut::with_capacity(FIXED + reason.len());
        b.put_u8(IMAGE_VERDICT);
        b.put_u8(u8::from(self.refused.is_some()));
        b.put_u64(self.tag);
        b.extend_from_slice(reason.as_bytes());
        b.freeze()
    }

    /// Reads a verdict a peer sent; never panics, allocates at most the reason's 256 bytes.
    pub fn decode(payload: &[u8]) -> Result<Self, VerdictError> {
        if !Self::is_verdict(payload) {
            return Err(VerdictError::NotAVerdict);
        }
        if payload.len() < FIXED {
            return Err(VerdictError::Truncated);
        }
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&payload[2..FIXED]);
        let reason = &payload[FIXED..];
        let refused = match payload[1] {
            0 if reason.is_empty() => None,
            1 if reason.len() <= MAX_VERDICT_REASON => {
                Some(std::str::from_utf8(reason).map_err(|_| VerdictError::Malformed)?.to_owned())
            }
            _ => return Err(VerdictError::Malformed),
        };
        Ok(Self { tag: u64::from_be_bytes(tag), refused })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn verdicts_round_trip_and_never_look_like_images() {
        let image = b"\x01\x02\x00\x00\x00\x10\x00\x00\x00\x10\xff\xd8";
        for v in [ImageVerdict::delivered(image), ImageVerdict::refused(image, "JPEG truncated")] {
            let wire = v.encode();
            assert!(ImageVerdict::is_verdict(&wire));
            assert_eq!(ImageVerdict::decode(&wire), Ok(v));
        }
        assert!(!ImageVerdict::is_verdict(image));
        assert_eq!(ImageVerdict::decode(image), Err(VerdictError::NotAVerdict));
        assert_eq!(ImageVerdict::decode(&[0x80, 0, 1]), Err(VerdictError::Truncated));
        // A delivered verdict with a reason, an unknown status, a reason that is not UTF-8: malformed.
        let mut bad = ImageVerdict::delivered(image).encode().to_vec();
        bad.push(b'x');
        assert_eq!(ImageVerdict::decode(&bad), Err(VerdictError::Malformed));
        bad[1] = 7;
        assert_eq!(ImageVerdict::decode(&bad), Err(VerdictError::Malformed));
        let mut bad = ImageVerdict::refused(image, "").encode().to_vec();
        bad.push(0xff);
        assert_eq!(ImageVerdict::decode(&bad), Err(VerdictError::Malformed));
    }

    #[test]
    fn a_long_reason_is_cut_at_a_character_boundary() {
        let v = ImageVerdict::refused(b"x", &"é".repeat(300));
        let reason = v.refused.clone().unwrap();
        assert!(reason.len() <= MAX_VERDICT_REASON && reason.len() >= MAX_VERDICT_REASON - 1);
        assert_eq!(ImageVerdict::decode(&v.encode()), Ok(v));
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_fail_without_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(v) = ImageVerdict::decode(&data) {
                prop_assert_eq!(&v.encode()[..], &data[..]);
            }
        }
    }
}
