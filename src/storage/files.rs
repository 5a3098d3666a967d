//! Who may read the data directory: only its owner. Directories are 0700 and files 0600, for the
//! files keyledger writes itself (key files, the recorded head) and for sled's (`db`, `conf`,
//! snapshots, `blobs/`). keyledger's own files are created with that mode; sled creates its files
//! with whatever the process umask leaves, so the binary narrows the umask first
//! ([`private_umask`]), and every open repairs the modes of what is already there
//! ([`restrict`]), for stores written before this rule or touched by other tools. On other
//! systems than Unix these are no-ops.

use std::fs::OpenOptions;
use std::path::Path;

/// Mode of every directory of the store.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file of the store.
pub const FILE_MODE: u32 = 0o600;

/// What lives in a data directory, by name: sled's files and directory, the key files, the
/// recorded head and the development master key. Only these are repaired: a data directory
/// pointed at a folder that holds other things leaves those alone.
fn is_store_entry(name: &str) -> bool {
    matches!(
        name,
        "db" | "conf" | "blobs" | "keys" | "master.key" | super::head::FILE
    ) || name.starts_with("snap.")
        || name.starts_with(".chain-head")
}

/// Narrows the process umask so that every file and directory the process creates from now on,
/// sled's included, is private to its owner. A stricter umask already in place is kept.
pub fn private_umask() {
    #[cfg(unix)]
    {
        use rustix::fs::Mode;
        use rustix::process::umask;
        let private = Mode::from_raw_mode(0o077);
        let before = umask(private);
        umask(before | private);
    }
}

/// Sets the mode keyledger's own files are created with.
pub fn private_file(options: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(options, FILE_MODE);
    options
}

/// Creates a directory (and its missing parents) private to its owner.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, DIR_MODE);
    builder.create(dir)
}

/// Repairs the modes of the data directory and of the store's entries in it (recursively under
/// `keys/` and `blobs/`). Symbolic links are left alone.
pub fn restrict(data_dir: &Path) -> std::io::Result<()> {
    set_mode(data_dir, true)?;
    for entry in std::fs::read_dir(data_dir)? {
        let entry = entry?;
        if entry.file_name().to_str().is_some_and(is_store_entry) {
            restrict_tree(&entry.path())?;
        }
    }
    Ok(())
}

fn restrict_tree(path: &Path) -> std::io::Result<()> {
    let kind = std::fs::symlink_metadata(path)?.file_type();
    if kind.is_dir() {
        set_mode(path, true)?;
        for entry in std::fs::read_dir(path)? {
            restrict_tree(&entry?.path())?;
        }
    } else if kind.is_file() {
        set_mode(path, false)?;
    }
    Ok(())
}

#[cfg(unix)]
fn set_mode(path: &Path, dir: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let wanted = if dir { DIR_MODE } else { FILE_MODE };
    let current = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if current != wanted {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(wanted))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _dir: bool) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn restrict_repairs_the_store_and_leaves_other_things_alone() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("keys")).unwrap();
        for file in ["db", "conf", "snap.0001", "keys/byok_1", "notes.txt"] {
            std::fs::write(data.join(file), b"x").unwrap();
            std::fs::set_permissions(data.join(file), PermissionsExt::from_mode(0o644)).unwrap();
        }
        std::fs::set_permissions(&data, PermissionsExt::from_mode(0o755)).unwrap();
        restrict(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("keys")), 0o700);
        for file in ["db", "conf", "snap.0001", "keys/byok_1"] {
            assert_eq!(mode(&data.join(file)), 0o600, "{file}");
        }
        assert_eq!(mode(&data.join("notes.txt")), 0o644);
    }
}
