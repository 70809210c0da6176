//! Real processes for the daemon tests: mosquitto and sentimqd in guards that kill and wait on
//! drop, free loopback ports, config files in temp dirs, and waits with deadlines.

use std::fs;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The mosquitto broker executable, the one [`Broker`] runs. Panics, saying how to install it,
/// when there is none: the daemon tests need a real broker.
#[track_caller]
pub fn mosquitto() -> PathBuf {
    mosquitto_program("mosquitto")
}

/// A program of Debian's mosquitto packages (`mosquitto`, `mosquitto_passwd`):
/// `/usr/sbin/<name>` (where Debian puts the broker, outside many users' PATH), else the first
/// executable `<name>` on PATH. Panics, saying how to install it, when there is none.
#[track_caller]
pub fn mosquitto_program(name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;

    let path = std::env::var_os("PATH").unwrap_or_default();
    std::iter::once(PathBuf::from("/usr/sbin"))
        .chain(std::env::split_paths(&path))
        .map(|dir| dir.join(name))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| {
            panic!("{name} is not on PATH (or /usr/sbin/{name}): run scripts/setup.sh")
        })
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// Polls `condition` every 10 ms until it returns `Some` or `deadline` passes; then panics
/// saying what it waited for and what `last_seen` reports.
pub fn wait_until<T>(
    what: &str,
    deadline: Duration,
    mut condition: impl FnMut() -> Option<T>,
    last_seen: impl Fn() -> String,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = condition() {
            return value;
        }
        if start.elapsed() > deadline {
            panic!(
                "timed out after {:?} waiting for {what}; last seen: {}",
                deadline,
                last_seen()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn read_lossy(path: &Path) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = fs::File::open(path) {
        let _ = file.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// TLS listener settings for a test broker.
pub struct BrokerTls {
    /// Port of the TLS listener.
    pub port: u16,
    /// CA, server certificate and key (PEM files).
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What a test broker needs beyond the plain listener.
#[derive(Default)]
pub struct BrokerOptions {
    pub tls: Option<BrokerTls>,
    /// A mosquitto password file; anonymous clients are refused when set.
    pub password_file: Option<PathBuf>,
    /// No persistence. The default saves the database after every change (what the crash tests
    /// need), which costs a full write per message once thousands are queued.
    pub in_memory: bool,
    /// mosquitto's `max_packet_size`: it refuses larger packets and announces the limit to
    /// MQTT v5 clients in CONNACK.
    pub max_packet_size: Option<u32>,
}

/// A mosquitto on 127.0.0.1 with persistence in its directory; killed and reaped on drop.
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    config: PathBuf,
}

impl Broker {
    /// Writes a config into `dir` and starts mosquitto on a free port (retrying on a clash).
    pub fn start(dir: &Path, options: BrokerOptions) -> Broker {
        for _attempt in 0..5 {
            let port = free_port();
            let config = dir.join("mosquitto.conf");
            fs::write(&config, broker_config(dir, port, &options)).expect("writing mosquitto.conf");
            let mut broker = Broker {
                child: None,
                port,
                dir: dir.to_path_buf(),
                config,
            };
            if broker.spawn() {
                return broker;
            }
        }
        panic!(
            "mosquitto would not start; log:\n{}",
            read_lossy(&dir.join("mosquitto.log"))
        );
    }

    /// Starts the process and waits for the port; `false` if it exited (port clash).
    fn spawn(&mut self) -> bool {
        let binary = mosquitto();
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", binary.display()));
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                eprintln!("mosquitto exited with {status}: {}", self.log());
                self.child = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "mosquitto did not listen on {} within 10 s; log:\n{}",
            self.port,
            self.log()
        );
    }

    /// SIGKILL and reap: the broker loses whatever it had not saved.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port with the same persistence file.
    pub fn restart(&mut self) {
        self.kill();
        let start = Instant::now();
        while !self.spawn() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "mosquitto would not restart on port {}: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Asks mosquitto to save its database (SIGUSR1) and waits until a save finished after
    /// this call: everything the broker acknowledged before is then on disk.
    pub fn persist(&self) {
        let db = self.dir.join("mosquitto.db");
        let before = std::time::SystemTime::now();
        let pid = self.child.as_ref().expect("broker running").id();
        let sent = Command::new("kill")
            .args(["-USR1", &pid.to_string()])
            .status()
            .expect("running kill");
        assert!(sent.success(), "kill -USR1 {pid} failed");
        wait_until(
            "mosquitto to save its database",
            Duration::from_secs(10),
            || {
                let modified = fs::metadata(&db).and_then(|m| m.modified()).ok()?;
                (modified > before).then_some(())
            },
            || self.log(),
        );
    }

    /// The broker's log.
    pub fn log(&self) -> String {
        read_lossy(&self.dir.join("mosquitto.log"))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn broker_config(dir: &Path, port: u16, options: &BrokerOptions) -> String {
    let persistence = if options.in_memory {
        "persistence false".to_string()
    } else {
        format!(
            "persistence true
persistence_location {dir}/
persistence_file mosquitto.db
autosave_interval 1
autosave_on_changes true",
            dir = dir.display()
        )
    };
    let mut config = format!(
        "per_listener_settings false
{persistence}
max_queued_messages 0
max_inflight_messages 20
log_dest file {dir}/mosquitto.log
log_type error
log_type warning
log_type notice
log_type information
listener {port} 127.0.0.1
",
        dir = dir.display()
    );
    if is_root() {
        // mosquitto started as root switches to the `mosquitto` user, which cannot write the
        // log or the database into the test's private temp dir.
        config += "user root\n";
    }
    match &options.password_file {
        Some(file) => {
            config += &format!("allow_anonymous false\npassword_file {}\n", file.display())
        }
        None => config += "allow_anonymous true\n",
    }
    if let Some(bytes) = options.max_packet_size {
        config += &format!("max_packet_size {bytes}\n");
    }
    if let Some(tls) = &options.tls {
        config += &format!(
            "listener {} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            tls.port,
            tls.ca.display(),
            tls.cert.display(),
            tls.key.display()
        );
    }
    config
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}

/// A running `sentimqd`; killed and reaped on drop. Its stderr goes to `<name>.log`.
pub struct Daemon {
    child: Option<Child>,
    pub name: String,
    config: PathBuf,
    log: PathBuf,
    env: Vec<(String, String)>,
}

impl Daemon {
    /// Writes `config` to `<dir>/<name>.toml` and starts `sentimqd run` with it.
    pub fn spawn(dir: &Path, name: &str, config: &toml::Table) -> Daemon {
        Self::spawn_with_env(dir, name, config, &[])
    }

    /// Like [`spawn`](Self::spawn), with extra environment variables.
    pub fn spawn_with_env(
        dir: &Path,
        name: &str,
        config: &toml::Table,
        env: &[(&str, &str)],
    ) -> Daemon {
        let path = dir.join(format!("{name}.toml"));
        fs::write(&path, toml::to_string(config).expect("config serializes"))
            .expect("writing config");
        let mut daemon = Daemon {
            child: None,
            name: name.to_string(),
            config: path,
            log: dir.join(format!("{name}.log")),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        daemon.start();
        daemon
    }

    /// (Re)starts the process, appending to its log.
    pub fn start(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("opening the daemon log");
        let mut command = sentimqd_command();
        command
            .args(["run", "--config"])
            .arg(&self.config)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(command.spawn().expect("spawning sentimqd"));
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (up to 20 s) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        wait_until(
            "sentimqd to exit after SIGTERM",
            Duration::from_secs(20),
            || child.try_wait().ok().flatten(),
            || self.log(),
        )
    }

    /// Sends the signal `name` (`HUP`, …) with `kill`.
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("daemon running").id();
        let sent = Command::new("kill")
            .args([format!("-{name}"), pid.to_string()])
            .status()
            .expect("running kill");
        assert!(sent.success(), "kill -{name} {pid} failed");
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        read_lossy(&self.log)
    }

    /// Waits until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, deadline: Duration) {
        wait_until(
            &format!("{:?} in the log of {}", needle, self.name),
            deadline,
            || self.log().contains(needle).then_some(()),
            || self.log(),
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- log of {} ---\n{}", self.name, self.log());
        }
    }
}

/// The variable naming another `sentimqd` to test: a command line such as
/// `qemu-aarch64 -cpu cortex-a72 -L /usr/aarch64-linux-gnu -E LD_LIBRARY_PATH=/usr/aarch64-linux-gnu/lib
/// target/cross/aarch64-unknown-linux-gnu/debug/sentimqd`
/// (`cross/check.sh` sets it for the emulated run).
pub const DAEMON_UNDER_TEST: &str = "SENTIMQ_TEST_SENTIMQD";

/// `sentimqd` (this build's, or the one named by [`DAEMON_UNDER_TEST`]) with no inherited
/// `SENTIMQ_*` variables.
pub fn sentimqd_command() -> Command {
    let mut command = match std::env::var(DAEMON_UNDER_TEST) {
        Ok(line) => {
            let mut words = line.split_whitespace();
            let program = words.next().expect("SENTIMQ_TEST_SENTIMQD is empty");
            let mut command = Command::new(program);
            command.args(words);
            command
        }
        Err(_) => Command::new(env!("CARGO_BIN_EXE_sentimqd")),
    };
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SENTIMQ_") {
            command.env_remove(key);
        }
    }
    command
}

/// A daemon config for a broker on `port`: fast reconnects, 1 s stats, the test model.
pub fn daemon_config(port: u16, name: &str, base: &str, model: &Path) -> toml::Table {
    let text = format!(
        r#"
[mqtt]
server = "mqtt://127.0.0.1:{port}"
client_id = "{name}"
base_topic = "{base}"
keep_alive_secs = 5
connect_timeout_secs = 3
reconnect_initial_ms = 50
reconnect_max_ms = 500

[model]
path = "{model}"

[pipeline]
workers = 1
intra_op_threads = 1
max_batch = 16
max_wait_ms = 2
shutdown_timeout_secs = 15

[stats]
interval_secs = 1
"#,
        model = model.display()
    );
    text.parse().expect("test config is TOML")
}

/// Sets `path` (dotted) in a config table.
pub fn set(config: &mut toml::Table, path: &str, value: impl Into<toml::Value>) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let leaf = parts.pop().expect("non-empty path");
    let mut table = config;
    for part in parts {
        table = table
            .entry(part)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .expect("a section");
    }
    table.insert(leaf.to_string(), value.into());
}
