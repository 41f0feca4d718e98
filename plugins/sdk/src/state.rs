//! The byte format of exported stage state: a little-endian `u32` state version, then the state in
//! postcard. A stage refuses state of another version rather than misreading it.
//!
//! The state is written into one buffer of exactly its size, measured first. A plugin's linear
//! memory only ever grows, so the largest export is what an instance keeps for good: serialising
//! into a growing buffer (capacity doubling past the size) and then copying it behind the header
//! held up to three times the state at once, and every instance kept that high-water mark.

use serde::{Serialize, de::DeserializeOwned};

use crate::PluginError;

/// Writes `state` under `version`.
pub fn encode_state<S: Serialize>(version: u32, state: &S) -> Vec<u8> {
    const PLAIN_DATA: &str = "stage state is plain serialisable data";
    // Serialising fails only for types serde cannot describe (maps with non-string keys are fine
    // in postcard); a plugin's state is plain data, so this is a programming error.
    let size = postcard::serialize_with_flavor(state, postcard::ser_flavors::Size::default()).expect(PLAIN_DATA);
    let mut bytes = Vec::with_capacity(HEADER_BYTES + size);
    bytes.extend_from_slice(&version.to_le_bytes());
    postcard::to_extend(state, bytes).expect(PLAIN_DATA)
}

/// Bytes of the state version in front of the state.
const HEADER_BYTES: usize = 4;

/// Reads state written by [`encode_state`] with the same `version`.
pub fn decode_state<S: DeserializeOwned>(version: u32, bytes: &[u8]) -> Result<S, PluginError> {
    let (head, body) = bytes
        .split_first_chunk::<4>()
        .ok_or_else(|| PluginError::InvalidState(format!("{} bytes is too short for a state header", bytes.len())))?;
    let found = u32::from_le_bytes(*head);
    if found != version {
        return Err(PluginError::InvalidState(format!("state version {found} is not the expected {version}")));
    }
    postcard::from_bytes(body).map_err(|err| PluginError::InvalidState(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_other_versions_and_garbage() {
        let state = (vec![1.5_f64, -2.0], "x".to_string());
        let bytes = encode_state(3, &state);
        assert_eq!(&bytes[..4], &[3, 0, 0, 0]);
        assert_eq!(decode_state::<(Vec<f64>, String)>(3, &bytes), Ok(state));
        assert!(matches!(decode_state::<(Vec<f64>, String)>(4, &bytes), Err(PluginError::InvalidState(_))));
        assert!(decode_state::<(Vec<f64>, String)>(3, &[3, 0]).is_err());
        assert!(decode_state::<(Vec<f64>, String)>(3, &[3, 0, 0, 0, 0xff, 0xff]).is_err());
    }

    #[test]
    fn the_state_is_written_into_a_buffer_of_exactly_its_size() {
        // 1000 f64 (8 bytes each in postcard) behind their length (1000 as a varint: 2 bytes),
        // behind the 4-byte header: 8006 bytes, and not one byte of capacity more.
        let state: Vec<f64> = (0..1000).map(f64::from).collect();
        let bytes = encode_state(1, &state);
        assert_eq!((bytes.len(), bytes.capacity()), (4 + 2 + 8000, 4 + 2 + 8000));
        assert_eq!(decode_state::<Vec<f64>>(1, &bytes), Ok(state));
    }
}
