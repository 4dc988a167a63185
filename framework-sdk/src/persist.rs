//! The framework id file: read when the driver starts, written when the
//! master assigns the id.

use std::io::Write;
use std::path::Path;

use cairn_model::FrameworkId;

use crate::SdkError;

fn err(path: &Path, reason: impl ToString) -> SdkError {
    SdkError::IdFile {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The id in `path`; none when the file does not exist.
pub fn read_id(path: &Path) -> Result<Option<FrameworkId>, SdkError> {
    match std::fs::read_to_string(path) {
        Ok(s) => FrameworkId::parse("framework id file", s.trim())
            .map(Some)
            .map_err(|e| err(path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(err(path, e)),
    }
}

/// Writes `id` to `path` unless it already holds it: to a temporary file,
/// synced, then renamed over it, so a crash leaves the old id or the new.
pub fn write_id(path: &Path, id: &FrameworkId) -> Result<(), SdkError> {
    if read_id(path).ok().flatten().as_ref() == Some(id) {
        return Ok(());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| err(path, e))?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| err(&tmp, e))?;
    writeln!(f, "{id}").map_err(|e| err(&tmp, e))?;
    f.sync_all().map_err(|e| err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| err(path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn an_id_survives_a_round_trip_and_a_bad_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/framework-id");
        assert_eq!(read_id(&path).unwrap(), None);
        let id = FrameworkId::new("m-0001");
        write_id(&path, &id).unwrap();
        assert_eq!(read_id(&path).unwrap(), Some(id));
        std::fs::write(&path, "not/an id\n").unwrap();
        assert!(matches!(read_id(&path), Err(SdkError::IdFile { .. })));
    }
}
