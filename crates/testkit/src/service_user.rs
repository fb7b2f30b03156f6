//! Who PostgreSQL's and PgBouncer's binaries run as. Both refuse to run as
//! root, so when the tests do (a container, CI) the private servers run as
//! the `postgres` user, as `scripts/stack` runs the shared ones; otherwise
//! as whoever runs the tests.

use std::path::Path;
use std::process::Command;

#[derive(Clone, Copy, Debug)]
pub(crate) struct ServiceUser {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// The user to switch to, or `None` to stay who we are.
pub(crate) fn service_user() -> Option<ServiceUser> {
    if id(&["-u"]) != 0 {
        return None;
    }
    Some(ServiceUser {
        uid: id(&["-u", "postgres"]),
        gid: id(&["-g", "postgres"]),
    })
}

fn id(args: &[&str]) -> u32 {
    let out = Command::new("id")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running id {args:?}: {e}"));
    assert!(
        out.status.success(),
        "id {args:?} failed (as root, the private PostgreSQL and PgBouncer run as the user postgres, which the Debian packages create): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("id {args:?} printed no number: {e}"))
}

/// Gives `path` to the service user, so the server it is for can write
/// there (a temp dir is created private to its creator).
pub(crate) fn hand_over(path: &Path, user: Option<ServiceUser>) {
    if let Some(user) = user {
        std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
            .unwrap_or_else(|e| panic!("giving {} to the service user: {e}", path.display()));
    }
}

/// `command`, to run as the service user.
pub(crate) fn as_service(
    command: &mut tokio::process::Command,
    user: Option<ServiceUser>,
) -> &mut tokio::process::Command {
    if let Some(user) = user {
        command.uid(user.uid).gid(user.gid);
    }
    command
}
