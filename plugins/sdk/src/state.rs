//! The byte format of exported stage state: a little-endian `u32` state version, then the state in
//! postcard. A stage refuses state of another version rather than misreading it.

use serde::{Serialize, de::DeserializeOwned};

use crate::PluginError;

/// Writes `state` under `version`.
pub fn encode_state<S: Serialize>(version: u32, state: &S) -> Vec<u8> {
    let mut bytes = version.to_le_bytes().to_vec();
    // Serialising into a Vec fails only for types serde cannot describe (maps with non-string keys
    // are fine in postcard); a plugin's state is plain data, so this is a programming error.
    let body = postcard::to_stdvec(state).expect("stage state is plain serialisable data");
    bytes.extend_from_slice(&body);
    bytes
}

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
}
