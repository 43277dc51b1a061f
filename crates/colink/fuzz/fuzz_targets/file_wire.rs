//! Fuzzes the file-lane decoder with what a hostile peer could put on a session's file lane:
//! `FileMsg::decode` never panics, never allocates by a length it has not checked, and whatever it accepts
//! re-encodes to exactly the bytes it came from (one encoding per message).
#![no_main]

use bytes::Bytes;
use colink::files::wire::FileMsg;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let payload = Bytes::copy_from_slice(data);
    if let Ok(message) = FileMsg::decode(&payload) {
        assert_eq!(message.encode(), payload, "file message round trip");
        if let FileMsg::Offer { name, .. } = &message {
            // Names are length-checked on the wire; whether they are acceptable is the receiver's next check.
            assert!(name.len() <= colink::files::MAX_NAME_LEN);
        }
    }
});
