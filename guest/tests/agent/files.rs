//! File requests: streaming reads and atomic writes, listing, stat, mkdir, remove, rename,
//! chmod/chown, and permissions enforced per user.

use crate::common::{TestAgent, USER_ID, fails, give_to_user, ok, outcome, within};
use platinum_protocol::{
    FileEntry, FileKind, GuestErrorCode, GuestEvent, GuestMessage, Inbound, MakeDirReply, Mux,
    PathRequest, Request, WriteFile, channel,
};
use sha2::{Digest, Sha256};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

fn at(path: &Path) -> PathRequest {
    PathRequest {
        path: path.to_str().expect("utf-8 path").into(),
        user: None,
    }
}

fn at_as(path: &str, user: &str) -> PathRequest {
    PathRequest {
        path: path.into(),
        user: Some(user.into()),
    }
}

fn write_req(at: PathRequest) -> WriteFile {
    WriteFile {
        at,
        mode: None,
        append: false,
        create_parents: true,
        owner: None,
        metadata: Default::default(),
    }
}

async fn write(
    mux: &Mux,
    req: WriteFile,
    content: &[u8],
) -> Result<FileEntry, platinum_protocol::GuestError> {
    let (tx, mut rx) = mux
        .open_json(&Request::WriteFile(req))
        .expect("open")
        .split();
    // The guest may refuse before reading anything; then sending fails, and the outcome says why.
    if tx.send_data(channel::STDIN, content).await.is_ok() {
        let _ = tx.send_eof(channel::STDIN);
    }
    outcome(&mut rx)
        .await
        .map(|v| serde_json::from_value(v).expect("file entry"))
}

async fn read(
    mux: &Mux,
    at: PathRequest,
) -> Result<(FileEntry, Vec<u8>), platinum_protocol::GuestError> {
    let (_tx, mut rx) = mux.open_json(&Request::ReadFile(at)).expect("open").split();
    let mut info = None;
    let mut data = Vec::new();
    let mut eof = false;
    loop {
        match within("read_file", rx.recv()).await.expect("stream") {
            Some(Inbound::Data { channel: 1, bytes }) => data.extend_from_slice(&bytes),
            Some(Inbound::Eof { channel: 1 }) => eof = true,
            Some(Inbound::Msg(m)) => {
                match serde_json::from_slice::<GuestMessage>(&m).expect("message") {
                    GuestMessage::Event(GuestEvent::FileInfo(entry)) => info = Some(entry),
                    GuestMessage::Outcome(platinum_protocol::Outcome::Ok(_)) => {
                        assert!(eof, "EOF on channel 1 comes before the outcome");
                        return Ok((info.expect("file_info before data"), data));
                    }
                    GuestMessage::Outcome(platinum_protocol::Outcome::Error(e)) => return Err(e),
                    other => panic!("unexpected {other:?}"),
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_50_mib_file_round_trips_intact() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    let content: Vec<u8> = (0..50u32 * 1024 * 1024)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let path = agent.home.join("big/blob.bin");
    let entry = write(&mux, write_req(at(&path)), &content)
        .await
        .expect("write");
    assert_eq!(
        (entry.size, entry.kind, entry.owner.as_str(), entry.mode),
        (content.len() as u64, FileKind::File, "user", 0o644)
    );
    assert_eq!(
        std::fs::metadata(path.parent().expect("parent"))
            .expect("stat")
            .uid(),
        USER_ID,
        "parents belong to the user"
    );
    let (info, back) = read(&mux, at(&path)).await.expect("read");
    assert_eq!(info.size, content.len() as u64);
    assert_eq!(Sha256::digest(&back), Sha256::digest(&content));
}

#[tokio::test]
async fn writes_are_atomic_and_an_aborted_write_leaves_the_old_file() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    let path = agent.home.join("doc.txt");
    write(&mux, write_req(at(&path)), b"old content")
        .await
        .expect("write");

    let (tx, rx) = mux
        .open_json(&Request::WriteFile(write_req(at(&path))))
        .expect("open")
        .split();
    tx.send_data(channel::STDIN, &vec![b'n'; 1024 * 1024])
        .await
        .expect("data");
    // Sizes of the write's temporary files next to the destination.
    let temp_files = || -> Vec<u64> {
        std::fs::read_dir(&agent.home)
            .expect("list")
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".doc.txt.platinum-")
            })
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .collect()
    };
    within("the temp file to fill", async {
        while !temp_files().iter().any(|&len| len >= 1024 * 1024) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // Mid-write, readers still see the whole old file.
    assert_eq!(read(&mux, at(&path)).await.expect("read").1, b"old content");
    tx.reset("host aborted the upload");
    drop(rx);
    within("the temp file to go", async {
        while !temp_files().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(std::fs::read(&path).expect("read"), b"old content");

    // A completed write replaces the file and keeps its mode.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let entry = write(&mux, write_req(at(&path)), b"new")
        .await
        .expect("write");
    assert_eq!((entry.size, entry.mode), (3, 0o600));
    assert_eq!(std::fs::read(&path).expect("read"), b"new");
    assert!(temp_files().is_empty());

    let append = WriteFile {
        append: true,
        ..write_req(at(&path))
    };
    assert_eq!(write(&mux, append, b"er").await.expect("append").size, 5);
    assert_eq!(std::fs::read(&path).expect("read"), b"newer");
}

#[tokio::test]
async fn list_dir_descends_to_the_requested_depth_without_following_symlinks() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    let root = agent.home.join("tree");
    std::fs::create_dir_all(root.join("a/b/c")).expect("mkdir");
    std::fs::write(root.join("a/f.txt"), b"12").expect("write");
    std::os::unix::fs::symlink(&agent.home, root.join("loop")).expect("symlink");
    assert_eq!(list(&mux, &root, 1).await, ["/a", "/loop"]);
    assert_eq!(
        list(&mux, &root, 2).await,
        ["/a", "/a/b", "/a/f.txt", "/loop"]
    );
    assert_eq!(
        list(&mux, &root, 10).await,
        ["/a", "/a/b", "/a/b/c", "/a/f.txt", "/loop"]
    );
    let entries: Vec<FileEntry> = ok(
        &mux,
        &Request::ListDir {
            at: at(&root),
            depth: 1,
        },
    )
    .await;
    assert_eq!(entries[1].kind, FileKind::Symlink);
    let err = fails(
        &mux,
        &Request::ListDir {
            at: at(&root.join("a/f.txt")),
            depth: 1,
        },
    )
    .await;
    assert_eq!(err.code, GuestErrorCode::NotADirectory);
    assert_eq!(
        fails(
            &mux,
            &Request::ListDir {
                at: at(&root),
                depth: 0
            }
        )
        .await
        .code,
        GuestErrorCode::InvalidArgument
    );
}

/// Paths under `root` that `list_dir` returns, relative to it.
async fn list(mux: &Mux, root: &Path, depth: u32) -> Vec<String> {
    let entries: Vec<FileEntry> = ok(
        mux,
        &Request::ListDir {
            at: at(root),
            depth,
        },
    )
    .await;
    let prefix = root.to_str().expect("utf-8");
    entries
        .into_iter()
        .map(|e| {
            e.path
                .strip_prefix(prefix)
                .expect("absolute path under root")
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn a_listing_too_large_for_one_frame_is_a_typed_error() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    let dir = agent.home.join("many");
    std::fs::create_dir(&dir).expect("mkdir");
    for i in 0..6000 {
        std::fs::write(
            dir.join(format!("a-rather-long-file-name-to-fill-the-frame-{i:05}")),
            b"",
        )
        .expect("write");
    }
    let err = fails(
        &mux,
        &Request::ListDir {
            at: at(&dir),
            depth: 1,
        },
    )
    .await;
    assert_eq!(err.code, GuestErrorCode::Io);
    assert!(
        err.message.contains("larger than one frame"),
        "{}",
        err.message
    );
    let entries: Vec<FileEntry> = ok(
        &mux,
        &Request::ListDir {
            at: at(&agent.home),
            depth: 1,
        },
    )
    .await;
    assert!(entries.iter().any(|e| e.name == "many"));
}

#[tokio::test]
async fn stat_describes_symlinks_without_following_them() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    let target = agent.home.join("target.txt");
    std::fs::write(&target, b"hello").expect("write");
    let link = agent.home.join("link");
    std::os::unix::fs::symlink("target.txt", &link).expect("symlink");
    let entry: FileEntry = ok(&mux, &Request::Stat(at(&link))).await;
    assert_eq!(entry.kind, FileKind::Symlink);
    assert_eq!(entry.symlink_target.as_deref(), Some("target.txt"));
    assert_eq!(entry.name, "link");
    assert!(entry.permissions.starts_with('l'));
    // Where it leads: absolute, free of links, with the target's kind and bits.
    let resolved = entry.resolved.expect("a resolved target");
    let real = std::fs::canonicalize(&target).expect("canonical");
    assert_eq!(resolved.path, real.to_str().expect("utf-8"));
    assert_eq!(
        (resolved.kind, resolved.mode & 0o777),
        (FileKind::File, 0o644)
    );
    // A link whose target is gone resolves to nothing.
    let dangling = agent.home.join("dangling");
    std::os::unix::fs::symlink("gone.txt", &dangling).expect("symlink");
    let entry: FileEntry = ok(&mux, &Request::Stat(at(&dangling))).await;
    assert_eq!((entry.kind, entry.resolved), (FileKind::Symlink, None));
    let file: FileEntry = ok(&mux, &Request::Stat(at(&target))).await;
    assert_eq!(
        (
            file.kind,
            file.size,
            file.owner.as_str(),
            file.group.as_str()
        ),
        (FileKind::File, 5, "root", "root")
    );
    assert!(file.modified_unix_ns > 1_600_000_000_000_000_000);
    // Reading through the link reads the target.
    assert_eq!(read(&mux, at(&link)).await.expect("read").1, b"hello");
}

#[tokio::test]
async fn make_dir_is_mkdir_p() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    let dir = agent.home.join("x/y/z");
    let made: MakeDirReply = ok(
        &mux,
        &Request::MakeDir {
            at: at(&dir),
            mode: Some(0o700),
            owner: None,
        },
    )
    .await;
    assert!(made.created);
    assert_eq!(
        (made.entry.kind, made.entry.mode, made.entry.owner.as_str()),
        (FileKind::Dir, 0o700, "user")
    );
    let again: MakeDirReply = ok(
        &mux,
        &Request::MakeDir {
            at: at(&dir),
            mode: None,
            owner: None,
        },
    )
    .await;
    assert!(!again.created);
    let file = agent.home.join("plain");
    std::fs::write(&file, b"").expect("write");
    assert_eq!(
        fails(
            &mux,
            &Request::MakeDir {
                at: at(&file),
                mode: None,
                owner: None,
            }
        )
        .await
        .code,
        GuestErrorCode::AlreadyExists
    );
    let under_file = file.join("sub");
    assert_eq!(
        fails(
            &mux,
            &Request::MakeDir {
                at: at(&under_file),
                mode: None,
                owner: None,
            }
        )
        .await
        .code,
        GuestErrorCode::NotADirectory
    );
}

#[tokio::test]
async fn remove_needs_recursive_for_a_tree() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    let dir = agent.home.join("tree");
    std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
    std::fs::write(dir.join("sub/f"), b"x").expect("write");
    give_to_user(&dir);
    let err = fails(
        &mux,
        &Request::Remove {
            at: at(&dir),
            recursive: false,
        },
    )
    .await;
    assert_eq!(err.code, GuestErrorCode::DirectoryNotEmpty);
    let _: serde_json::Value = ok(
        &mux,
        &Request::Remove {
            at: at(&dir.join("sub/f")),
            recursive: false,
        },
    )
    .await;
    let _: serde_json::Value = ok(
        &mux,
        &Request::Remove {
            at: at(&dir),
            recursive: true,
        },
    )
    .await;
    assert!(!dir.exists());
    assert_eq!(
        fails(
            &mux,
            &Request::Remove {
                at: at(&dir),
                recursive: true
            }
        )
        .await
        .code,
        GuestErrorCode::NotFound
    );
    let root = PathRequest {
        path: "/".into(),
        user: Some("root".into()),
    };
    assert_eq!(
        fails(
            &mux,
            &Request::Remove {
                at: root,
                recursive: true
            }
        )
        .await
        .code,
        GuestErrorCode::InvalidArgument
    );
}

#[tokio::test]
async fn rename_refuses_to_overwrite_unless_asked() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    std::fs::write(agent.home.join("a"), b"a").expect("write");
    std::fs::write(agent.home.join("b"), b"b").expect("write");
    let rename = |from: &str, to: &str, overwrite| Request::Rename {
        from: from.into(),
        to: to.into(),
        user: None,
        overwrite,
    };
    assert_eq!(
        fails(&mux, &rename("a", "b", false)).await.code,
        GuestErrorCode::AlreadyExists
    );
    assert_eq!(std::fs::read(agent.home.join("b")).expect("read"), b"b");
    let moved: FileEntry = ok(&mux, &rename("a", "c", false)).await;
    assert_eq!(moved.path, agent.home.join("c").to_str().expect("utf-8"));
    let _: FileEntry = ok(&mux, &rename("c", "~/b", true)).await;
    assert_eq!(std::fs::read(agent.home.join("b")).expect("read"), b"a");
    assert_eq!(
        fails(&mux, &rename("missing", "d", false)).await.code,
        GuestErrorCode::NotFound
    );
}

#[tokio::test]
async fn metadata_is_set_by_writes_kept_by_renames_and_cleared_by_overwrites() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    let path = agent.home.join("tagged.txt");
    let tags = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let written = write(
        &mux,
        WriteFile {
            metadata: tags(&[("Owner", "ada"), ("stage", "draft")]),
            ..write_req(at(&path))
        },
        b"v1",
    )
    .await
    .expect("write");
    // Keys in lower case, stored where envd keeps them.
    assert_eq!(
        written.metadata,
        tags(&[("owner", "ada"), ("stage", "draft")])
    );
    assert_eq!(
        xattr::get(&path, "user.e2b.owner").expect("xattr"),
        Some(b"ada".to_vec())
    );
    // Set from inside the sandbox too; other attributes are not metadata.
    xattr::set(&path, "user.e2b.by-hand", b"yes").expect("set xattr");
    xattr::set(&path, "user.unrelated", b"1").expect("set xattr");
    let seen: FileEntry = ok(&mux, &Request::Stat(at(&path))).await;
    assert_eq!(
        seen.metadata,
        tags(&[("by-hand", "yes"), ("owner", "ada"), ("stage", "draft")])
    );
    let listed: Vec<FileEntry> = ok(
        &mux,
        &Request::ListDir {
            at: at(&agent.home),
            depth: 1,
        },
    )
    .await;
    let entry = listed
        .iter()
        .find(|e| e.name == "tagged.txt")
        .expect("listed");
    assert_eq!(entry.metadata, seen.metadata);
    // A rename keeps it.
    let moved: FileEntry = ok(
        &mux,
        &Request::Rename {
            from: "tagged.txt".into(),
            to: "moved.txt".into(),
            user: None,
            overwrite: false,
        },
    )
    .await;
    assert_eq!(moved.metadata, seen.metadata);
    // Appending keeps it and sets the new keys; replacing drops it.
    let moved_path = agent.home.join("moved.txt");
    let appended = write(
        &mux,
        WriteFile {
            append: true,
            metadata: tags(&[("stage", "final")]),
            ..write_req(at(&moved_path))
        },
        b"+",
    )
    .await
    .expect("append");
    assert_eq!(appended.metadata["stage"], "final");
    assert_eq!(appended.metadata["owner"], "ada");
    let replaced = write(&mux, write_req(at(&moved_path)), b"v2")
        .await
        .expect("overwrite");
    assert!(replaced.metadata.is_empty(), "{:?}", replaced.metadata);
}

#[tokio::test]
async fn chmod_and_chown() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    let file = agent.home.join("f");
    std::fs::write(&file, b"x").expect("write");
    let entry: FileEntry = ok(
        &mux,
        &Request::Chmod {
            at: at_as(file.to_str().expect("utf-8"), "root"),
            mode: 0o751,
        },
    )
    .await;
    assert_eq!(
        (entry.mode, entry.permissions.as_str()),
        (0o751, "-rwxr-x--x")
    );
    let as_root = at_as(file.to_str().expect("utf-8"), "root");
    let chown = |at: PathRequest, owner: Option<&str>, group: Option<&str>| Request::Chown {
        at,
        owner: owner.map(str::to_string),
        group: group.map(str::to_string),
    };
    let entry: FileEntry = ok(&mux, &chown(as_root.clone(), Some("user"), Some("extra"))).await;
    assert_eq!(
        (entry.owner.as_str(), entry.group.as_str()),
        ("user", "extra")
    );
    // The user owns it now and may chmod it, but may not give it away.
    let entry: FileEntry = ok(
        &mux,
        &Request::Chmod {
            at: at(&file),
            mode: 0o600,
        },
    )
    .await;
    assert_eq!(entry.mode, 0o600);
    assert_eq!(
        fails(&mux, &chown(at(&file), Some("root"), None))
            .await
            .code,
        GuestErrorCode::PermissionDenied
    );
    assert_eq!(
        fails(&mux, &chown(as_root.clone(), Some("ghost"), None))
            .await
            .code,
        GuestErrorCode::UserNotFound
    );
    assert_eq!(
        fails(&mux, &chown(as_root.clone(), None, Some("ghosts")))
            .await
            .code,
        GuestErrorCode::UserNotFound
    );
    assert_eq!(
        fails(&mux, &chown(as_root, None, None)).await.code,
        GuestErrorCode::InvalidArgument
    );
}

#[tokio::test]
async fn permissions_are_the_users_own() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    let denied = write(
        &mux,
        write_req(at_as("/root/platinum-test-denied", "nobody")),
        b"x",
    )
    .await
    .expect_err("denied");
    assert_eq!(denied.code, GuestErrorCode::PermissionDenied);
    assert!(!Path::new("/root/platinum-test-denied").exists());
    let secret = agent.dir.path().join("secret");
    std::fs::write(&secret, b"s").expect("write");
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    assert_eq!(
        read(&mux, at(&secret)).await.expect_err("denied").code,
        GuestErrorCode::PermissionDenied
    );
    assert_eq!(
        read(&mux, at_as(secret.to_str().expect("utf-8"), "root"))
            .await
            .expect("read")
            .1,
        b"s"
    );
    // Root's credentials are back on every pool thread afterwards.
    for _ in 0..8 {
        let entry: FileEntry = ok(&mux, &Request::Stat(at_as("/root", "root"))).await;
        assert_eq!(entry.kind, FileKind::Dir);
        let (_, data) = read(&mux, at_as(secret.to_str().expect("utf-8"), "root"))
            .await
            .expect("read as root");
        assert_eq!(data, b"s");
    }
}

#[tokio::test]
async fn missing_files_directories_and_relative_paths() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    assert_eq!(
        read(&mux, at(&agent.home.join("nope")))
            .await
            .expect_err("missing")
            .code,
        GuestErrorCode::NotFound
    );
    assert_eq!(
        read(&mux, at(&agent.home)).await.expect_err("dir").code,
        GuestErrorCode::IsADirectory
    );
    let entry = write(
        &mux,
        write_req(PathRequest {
            path: "notes/rel.txt".into(),
            user: None,
        }),
        b"hi",
    )
    .await
    .expect("write");
    assert_eq!(
        entry.path,
        agent.home.join("notes/rel.txt").to_str().expect("utf-8")
    );
    assert_eq!(entry.owner, "user");
    let (info, data) = read(
        &mux,
        PathRequest {
            path: "~/notes/rel.txt".into(),
            user: None,
        },
    )
    .await
    .expect("read");
    assert_eq!((info.path, data), (entry.path, b"hi".to_vec()));
    let _: serde_json::Value = ok(&mux, &Request::Sync).await;
}

/// E2B's envd semantics in one request each: root creates a directory or a file on the user's
/// behalf and hands it, and every parent it had to create, to that user; parents that existed
/// keep their owner.
#[tokio::test]
async fn root_hands_what_it_creates_to_the_owner() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    let as_root = |path: &Path| PathRequest {
        path: path.to_str().unwrap().into(),
        user: Some("root".into()),
    };
    let owner_of = |path: &Path| {
        let md = std::fs::symlink_metadata(path).expect("stat");
        (md.uid(), md.gid())
    };
    let base = agent.home.join("made-by-root");
    std::fs::create_dir(&base).expect("mkdir");
    let before = owner_of(&base);

    let made: MakeDirReply = ok(
        &mux,
        &Request::MakeDir {
            at: as_root(&base.join("a/b")),
            mode: None,
            owner: Some("user".into()),
        },
    )
    .await;
    assert!(made.created);
    assert_eq!(owner_of(&base.join("a")), (USER_ID, USER_ID));
    assert_eq!(owner_of(&base.join("a/b")), (USER_ID, USER_ID));
    assert_eq!(
        owner_of(&base),
        before,
        "an existing parent keeps its owner"
    );

    let req = WriteFile {
        owner: Some("user".into()),
        ..write_req(as_root(&base.join("c/d/f.txt")))
    };
    let written = write(&mux, req, b"x").await.expect("write");
    assert_eq!(written.owner, "user");
    assert_eq!(owner_of(&base.join("c")), (USER_ID, USER_ID));
    assert_eq!(owner_of(&base.join("c/d")), (USER_ID, USER_ID));

    // Without an owner, root keeps what it creates.
    let plain = write(&mux, write_req(as_root(&base.join("e/f.txt"))), b"x")
        .await
        .expect("write");
    assert_eq!(plain.owner, "root");
    assert_eq!(owner_of(&base.join("e")), (0, 0));

    // An owner that does not exist is refused before anything is created.
    let err = fails(
        &mux,
        &Request::MakeDir {
            at: as_root(&base.join("g")),
            mode: None,
            owner: Some("nobody-at-all".into()),
        },
    )
    .await;
    assert_eq!(err.code, GuestErrorCode::UserNotFound);
    assert!(!base.join("g").exists());
}
