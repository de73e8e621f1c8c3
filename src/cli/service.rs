//! `capsule service install`: a systemd unit that runs the node as a user
//! of its own, allowed to write its data directory and nothing else, able
//! to bind ports 80 and 443 without root, restarted when it fails.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::gateway::connections::MAX_CONNECTIONS;

/// Where systemd looks for units the administrator installs.
pub const SYSTEM_UNITS: &str = "/etc/systemd/system";

/// The unit's file name.
pub const UNIT: &str = "capsule.service";

/// The data directory of a service node unless `--data-dir` says otherwise:
/// systemd's place for a service's state.
pub const SERVICE_DATA_DIR: &str = "/var/lib/capsule";

/// Files the node may hold open besides its HTTP connections: the store,
/// listeners, QUIC and admin sockets, peers' connections, logs.
const OTHER_FILES: usize = 1_024;

/// Places a service with `ProtectHome` cannot read: a binary there would
/// not start.
const HOMES: [&str; 3] = ["/home/", "/root/", "/run/user/"];

/// What `capsule service install` is told.
#[derive(Debug)]
pub struct InstallArgs {
    /// The data directory (`--data-dir`), else [`SERVICE_DATA_DIR`].
    pub data_dir: Option<PathBuf>,
    /// The user the node runs as.
    pub user: String,
    /// Where the unit goes ([`SYSTEM_UNITS`]).
    pub unit_dir: Option<PathBuf>,
    /// The binary the unit runs (this one).
    pub binary: Option<PathBuf>,
    /// Overwrite an existing unit.
    pub force: bool,
}

/// The unit's text.
pub fn unit(binary: &Path, data: &Path, user: &str) -> String {
    let state = data
        .strip_prefix("/var/lib")
        .ok()
        .filter(|rest| rest.components().count() == 1);
    let state_directory = match state {
        // systemd makes it, owned by the user, mode 0700, before each start.
        Some(name) => format!(
            "StateDirectory={}\nStateDirectoryMode=0700\n",
            name.display()
        ),
        None => String::new(),
    };
    format!(
        "# Written by `capsule service install`: the Capsule node of {data}.
# Settings (domain, email, peers) live in {data}/config.toml.
[Unit]
Description=Capsule, a self-hosted peer-to-peer microblog
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User={user}
Group={user}
ExecStart={binary} --data-dir {data} up
Restart=on-failure
RestartSec=5s
# A clean stop: requests finish, sessions close, the store closes.
KillSignal=SIGTERM
TimeoutStopSec=30s
{state_directory}ReadWritePaths={data}
# Ports 80 and 443 without root, and no other privilege.
AmbientCapabilities=CAP_NET_BIND_SERVICE
CapabilityBoundingSet=CAP_NET_BIND_SERVICE
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
LockPersonality=yes
RestrictRealtime=yes
SystemCallArchitectures=native
UMask=0077
# {MAX_CONNECTIONS} HTTP connections at once, and {OTHER_FILES} more files.
LimitNOFILE={files}

[Install]
WantedBy=multi-user.target
",
        binary = binary.display(),
        data = data.display(),
        files = MAX_CONNECTIONS + OTHER_FILES,
    )
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `user` exists, as the system's name service sees it (files,
/// LDAP, systemd's own users alike).
fn user_exists(user: &str) -> bool {
    let Ok(name) = std::ffi::CString::new(user) else {
        return false;
    };
    // SAFETY: a valid C string; the result is only compared with null.
    !unsafe { libc::getpwnam(name.as_ptr()) }.is_null()
}

/// `capsule service install`.
pub fn install(args: InstallArgs) -> Result<ExitCode> {
    let data = args
        .data_dir
        .unwrap_or_else(|| PathBuf::from(SERVICE_DATA_DIR));
    anyhow::ensure!(
        data.is_absolute(),
        "--data-dir {} must be an absolute path for a service",
        data.display()
    );
    anyhow::ensure!(
        !args.user.is_empty()
            && args
                .user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "--user {:?} is not a user name (letters, digits, - and _)",
        args.user
    );
    let binary = match args.binary {
        Some(b) => b,
        None => std::env::current_exe().context("cannot find this capsule binary")?,
    };
    let binary = binary
        .canonicalize()
        .with_context(|| format!("{} is not there", binary.display()))?;
    if let Some(home) = HOMES.iter().find(|h| binary.starts_with(h)) {
        bail!(
            "{} is under {home}, which the service cannot read (ProtectHome): install the binary for every user first, `cargo install --path . --root /usr/local` (it becomes /usr/local/bin/capsule), then run `/usr/local/bin/capsule service install`",
            binary.display()
        );
    }
    let system = args.unit_dir.is_none();
    let unit_dir = args.unit_dir.unwrap_or_else(|| PathBuf::from(SYSTEM_UNITS));
    let path = unit_dir.join(UNIT);
    if path.exists() && !args.force {
        bail!(
            "{} exists already; it is left as it is (--force writes a new one over it)",
            path.display()
        );
    }
    if system && !is_root() {
        bail!(
            "writing {} and making the user {} needs root: run it with sudo (or give --unit-dir to only write the unit)",
            path.display(),
            args.user
        );
    }
    if system && !user_exists(&args.user) {
        let made = std::process::Command::new("useradd")
            .args(["--system", "--user-group", "--no-create-home"])
            .args(["--shell", "/usr/sbin/nologin", "--home-dir"])
            .arg(&data)
            .arg(&args.user)
            .status()
            .context("cannot run useradd")?;
        anyhow::ensure!(made.success(), "useradd could not make {}", args.user);
        println!("made the system user {}", args.user);
    }
    if system && !data.exists() {
        let made = std::process::Command::new("install")
            .args(["-d", "-m", "0700", "-o", &args.user, "-g", &args.user])
            .arg(&data)
            .status()
            .context("cannot run install -d")?;
        anyhow::ensure!(made.success(), "cannot make {}", data.display());
        println!(
            "made {} (mode 0700, owned by {})",
            data.display(),
            args.user
        );
    }
    std::fs::create_dir_all(&unit_dir)
        .with_context(|| format!("cannot make {}", unit_dir.display()))?;
    let text = unit(&binary, &data, &args.user);
    let tmp = path.with_extension("service.tmp");
    std::fs::write(&tmp, &text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {}", path.display());
    let run_as = format!(
        "sudo -u {} {} --data-dir {}",
        args.user,
        binary.display(),
        data.display()
    );
    println!(
        "next:
  1. settings: put `domain = \"alice.example\"` (and `email = \"you@example.com\"`) in {data}/config.toml
  2. systemctl daemon-reload && systemctl enable --now capsule
  3. the passphrase for /login: {run_as} passwd
  4. how it goes: {run_as} status
  logs: journalctl -u capsule -f",
        data = data.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_under_var_lib_is_made_by_systemd() {
        let text = unit(
            Path::new("/usr/local/bin/capsule"),
            Path::new("/var/lib/capsule"),
            "capsule",
        );
        assert!(text.contains("StateDirectory=capsule\n"));
        assert!(text.contains("ExecStart=/usr/local/bin/capsule --data-dir /var/lib/capsule up\n"));
        assert!(text.contains(&format!("LimitNOFILE={}\n", MAX_CONNECTIONS + OTHER_FILES)));
        let elsewhere = unit(
            Path::new("/opt/capsule"),
            Path::new("/srv/capsule"),
            "capsule",
        );
        assert!(!elsewhere.contains("StateDirectory"));
        assert!(elsewhere.contains("ReadWritePaths=/srv/capsule\n"));
    }
}
