//! Round trips through `debugfs` on a real ext4 image made with `mkfs.ext4` in a temp dir.

use super::*;
use bytes::Bytes;

async fn image() -> (tempfile::TempDir, VolumeImage) {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("vol.ext4");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    crate::tool::Tool::new("test", "mkfs.ext4")
        .unwrap()
        .args(["-q", "-F", "-t", "ext4", "-E", "root_owner=1000:1000"])
        .arg(&image)
        .output()
        .await
        .unwrap();
    let vol = VolumeImage::new(image, dir.path().to_path_buf());
    (dir, vol)
}

fn body(text: &str) -> ByteStream {
    let chunks: Vec<std::io::Result<Bytes>> = text
        .as_bytes()
        .chunks(3)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Box::pin(futures::stream::iter(chunks))
}

async fn read(vol: &VolumeImage, path: &str) -> String {
    let (mut file, size) = vol.read_file(path).await.unwrap();
    let mut s = String::new();
    std::io::Read::read_to_string(&mut file, &mut s).unwrap();
    assert_eq!(s.len() as u64, size);
    s
}

fn code(e: Error) -> GuestErrorCode {
    match e {
        Error::Volume(g) => g.code,
        other => panic!("not a volume error: {other}"),
    }
}

#[tokio::test]
async fn write_read_list_mkdir_remove_round_trip() {
    let (_dir, vol) = image().await;
    let f = vol
        .write_file(
            "/notes/deep er/hello world.txt",
            body("hi there\n"),
            VolumeAttrs::default(),
            1 << 20,
        )
        .await
        .unwrap();
    assert_eq!(f.path, "/notes/deep er/hello world.txt");
    assert_eq!(
        (f.kind, f.size, f.mode, f.uid, f.gid),
        (VolumeEntryKind::File, 9, 0o644, 1000, 1000)
    );
    assert!(f.mtime > 1_600_000_000 && f.ctime > 1_600_000_000, "{f:?}");
    assert_eq!(
        read(&vol, "notes/deep er/hello world.txt").await,
        "hi there\n"
    );
    let parent = vol.stat("/notes/deep er").await.unwrap();
    assert_eq!(
        (parent.kind, parent.uid, parent.mode),
        (VolumeEntryKind::Dir, 1000, 0o755)
    );

    // Replaced whole, with the asked attributes.
    let attrs = VolumeAttrs {
        uid: Some(0),
        gid: Some(0),
        mode: Some(0o600),
    };
    let f = vol
        .write_file(
            "/notes/deep er/hello world.txt",
            body("new"),
            attrs,
            1 << 20,
        )
        .await
        .unwrap();
    assert_eq!((f.size, f.mode, f.uid), (3, 0o600, 0));
    assert_eq!(read(&vol, "/notes/deep er/hello world.txt").await, "new");

    let (d, created) = vol
        .make_dir("/a/b", true, VolumeAttrs::default())
        .await
        .unwrap();
    assert!(created);
    assert_eq!((d.kind, d.uid), (VolumeEntryKind::Dir, 1000));
    assert!(
        !vol.make_dir("/a/b", false, VolumeAttrs::default())
            .await
            .unwrap()
            .1
    );
    assert_eq!(
        code(
            vol.make_dir("/x/y", false, VolumeAttrs::default())
                .await
                .unwrap_err()
        ),
        GuestErrorCode::NotFound
    );

    let top: Vec<String> = vol
        .list("/", 1)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(top, ["/a", "/lost+found", "/notes"]);
    let deep: Vec<String> = vol
        .list("/notes", 2)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(deep, ["/notes/deep er", "/notes/deep er/hello world.txt"]);

    let changed = vol
        .set_attrs(
            "/a",
            VolumeAttrs {
                mode: Some(0o700),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((changed.mode, changed.uid), (0o700, 1000));

    vol.remove("/notes").await.unwrap();
    assert_eq!(
        code(vol.stat("/notes/deep er").await.unwrap_err()),
        GuestErrorCode::NotFound
    );
    assert_eq!(
        code(vol.stat("/notes").await.unwrap_err()),
        GuestErrorCode::NotFound
    );
    assert_eq!(
        code(vol.remove("/notes").await.unwrap_err()),
        GuestErrorCode::NotFound
    );
    assert_eq!(
        code(vol.read_file("/a").await.unwrap_err()),
        GuestErrorCode::IsADirectory
    );
}

#[tokio::test]
async fn bad_paths_are_refused() {
    let (_dir, vol) = image().await;
    for bad in ["/a/../b", "..", "a\0b", "a\"b", "a\nb", "/<12>"] {
        let e = vol.stat(bad).await.unwrap_err();
        assert_eq!(code(e), GuestErrorCode::InvalidArgument, "{bad:?}");
    }
    let e = vol
        .write_file("/x/../../etc/passwd", body("x"), VolumeAttrs::default(), 10)
        .await
        .unwrap_err();
    assert_eq!(code(e), GuestErrorCode::InvalidArgument);
    assert_eq!(
        code(vol.remove("/").await.unwrap_err()),
        GuestErrorCode::InvalidArgument
    );
    let e = vol
        .write_file("/big", body("12345"), VolumeAttrs::default(), 4)
        .await
        .unwrap_err();
    assert_eq!(code(e), GuestErrorCode::NoSpace);
}

#[tokio::test]
async fn symlinks_are_described_never_followed() {
    let (dir, vol) = image().await;
    // A guest's symlinks: one to a file in the volume, one to a directory, one to a host path.
    vol.write_file(
        "/real/secret.txt",
        body("inside"),
        VolumeAttrs::default(),
        100,
    )
    .await
    .unwrap();
    let scratch = vol.scratch().unwrap();
    let script = vec![
        "symlink /lnfile /real/secret.txt".to_string(),
        "symlink /lndir /real".to_string(),
        "symlink /host /etc/passwd".to_string(),
    ];
    vol.change(&script, scratch.path()).await.unwrap();
    drop(scratch);

    let l = vol.stat("/lnfile").await.unwrap();
    assert_eq!(l.kind, VolumeEntryKind::Symlink);
    assert_eq!(l.target.as_deref(), Some("/real/secret.txt"));
    let listed = vol.list("/", 1).await.unwrap();
    assert!(
        listed
            .iter()
            .any(|e| e.path == "/host" && e.kind == VolumeEntryKind::Symlink)
    );

    assert_eq!(
        code(vol.read_file("/lnfile").await.unwrap_err()),
        GuestErrorCode::PermissionDenied
    );
    assert_eq!(
        code(vol.read_file("/host").await.unwrap_err()),
        GuestErrorCode::PermissionDenied
    );
    assert_eq!(
        code(vol.stat("/lndir/secret.txt").await.unwrap_err()),
        GuestErrorCode::PermissionDenied
    );
    assert_eq!(
        code(vol.list("/lndir", 1).await.unwrap_err()),
        GuestErrorCode::NotADirectory
    );
    let e = vol
        .write_file("/lndir/new.txt", body("x"), VolumeAttrs::default(), 10)
        .await
        .unwrap_err();
    assert_eq!(code(e), GuestErrorCode::PermissionDenied);

    // Writing over a link replaces the link; the file it pointed at is untouched.
    vol.write_file("/lnfile", body("replaced"), VolumeAttrs::default(), 100)
        .await
        .unwrap();
    assert_eq!(
        vol.stat("/lnfile").await.unwrap().kind,
        VolumeEntryKind::File
    );
    assert_eq!(read(&vol, "/real/secret.txt").await, "inside");
    // Removing a link removes the link only.
    vol.remove("/lndir").await.unwrap();
    assert_eq!(read(&vol, "/real/secret.txt").await, "inside");
    // Nothing was written outside the scratch directories.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, [std::ffi::OsString::from("vol.ext4")], "{left:?}");
}
