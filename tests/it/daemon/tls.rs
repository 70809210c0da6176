//! TLS with certificates made in the test (CA, server, client), and a refused password.

use std::path::Path;
use std::process::Command;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use super::client::TestClient;
use super::harness::{
    daemon_config, free_port, mosquitto_program, set, Broker, BrokerOptions, BrokerTls, Daemon,
};
use super::{setup, REPLY, START};

struct Pki {
    ca: std::path::PathBuf,
    server_cert: std::path::PathBuf,
    server_key: std::path::PathBuf,
    client_cert: std::path::PathBuf,
    client_key: std::path::PathBuf,
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files.
fn make_pki(dir: &Path) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "sentimq test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let issue = |names: Vec<String>, common_name: &str| {
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = issue(vec!["127.0.0.1".into(), "localhost".into()], "broker");
    let (client_cert, client_key) = issue(vec!["sentimqd".into()], "sentimqd");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    Pki {
        ca: write("ca.pem", &ca_cert.pem()),
        server_cert: write("server.pem", &server_cert),
        server_key: write("server.key", &server_key),
        client_cert: write("client.pem", &client_cert),
        client_key: write("client.key", &client_key),
    }
}

#[test]
fn tls_with_client_certificates() {
    let model = setup();
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let tls_port = free_port();
    let broker = Broker::start(
        dir.path(),
        BrokerOptions {
            tls: Some(BrokerTls {
                port: tls_port,
                ca: pki.ca.clone(),
                cert: pki.server_cert.clone(),
                key: pki.server_key.clone(),
            }),
            ..BrokerOptions::default()
        },
    );
    // The test client uses the plain listener; the daemon must use TLS.
    let client = TestClient::v5(broker.port, "tls-client");
    client.subscribe("secure/#");
    let mut config = daemon_config(broker.port, "tls-daemon", "secure", model);
    set(
        &mut config,
        "mqtt.server",
        format!("mqtts://127.0.0.1:{tls_port}"),
    );
    set(&mut config, "mqtt.tls.ca_file", pki.ca.to_str().unwrap());
    set(
        &mut config,
        "mqtt.tls.cert_file",
        pki.client_cert.to_str().unwrap(),
    );
    set(
        &mut config,
        "mqtt.tls.key_file",
        pki.client_key.to_str().unwrap(),
    );
    let daemon = Daemon::spawn(dir.path(), "tls", &config);
    client.wait_for_payload("secure/status", "online", START);
    daemon.wait_for_log("ready", START);
    client.publish("secure/classify/x", "Encrypted and still a great film");
    let result = client
        .wait_on("secure/result/secure/classify/x", REPLY)
        .json();
    assert!(result["label"].is_string(), "{result}");
    let log = broker.log();
    assert!(log.contains(&format!("on port {tls_port}")), "{log}");

    // Without the client certificate the broker refuses the handshake, and the log says
    // what to check.
    let mut no_client_cert = daemon_config(broker.port, "tls-nocert", "nocert", model);
    set(
        &mut no_client_cert,
        "mqtt.server",
        format!("mqtts://127.0.0.1:{tls_port}"),
    );
    set(
        &mut no_client_cert,
        "mqtt.tls.ca_file",
        pki.ca.to_str().unwrap(),
    );
    let mut refused = Daemon::spawn(dir.path(), "tls-nocert", &no_client_cert);
    refused.wait_for_log("mqtt.tls", START);
    assert!(refused.is_running(), "keeps retrying: {}", refused.log());
}

#[test]
fn a_wrong_password_is_logged_clearly() {
    let model = setup();
    let dir = tempfile::tempdir().unwrap();
    let passwords = dir.path().join("passwords");
    let mosquitto_passwd = mosquitto_program("mosquitto_passwd");
    let made = Command::new(&mosquitto_passwd)
        .args(["-c", "-b"])
        .arg(&passwords)
        .args(["sentimqd", "right-password"])
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e}", mosquitto_passwd.display()));
    assert!(
        made.success(),
        "{} -c -b {} failed: {made}",
        mosquitto_passwd.display(),
        passwords.display()
    );
    let broker = Broker::start(
        dir.path(),
        BrokerOptions {
            password_file: Some(passwords),
            ..BrokerOptions::default()
        },
    );
    let mut config = daemon_config(broker.port, "pw-daemon", "pw", model);
    set(&mut config, "mqtt.username", "sentimqd");
    let mut daemon = Daemon::spawn_with_env(
        dir.path(),
        "pw",
        &config,
        &[("SENTIMQ_MQTT_PASSWORD", "wrong-password")],
    );
    daemon.wait_for_log("refused the connection", START);
    let log = daemon.log();
    assert!(
        log.contains("bad user name or password") || log.contains("not authorized"),
        "{log}"
    );
    assert!(
        log.contains("mqtt.username"),
        "the line says what to check: {log}"
    );
    assert!(
        !log.contains("wrong-password"),
        "the password leaked into the log: {log}"
    );
    // It keeps retrying with backoff, logging the refusal once, not once per attempt.
    super::harness::wait_until(
        "three refused attempts in the broker log",
        START,
        || (broker.log().matches("not authorised").count() >= 3).then_some(()),
        || broker.log(),
    );
    assert!(daemon.is_running());
    assert_eq!(
        daemon.log().matches("refused the connection").count(),
        1,
        "{}",
        daemon.log()
    );
    daemon.kill();

    // The right password from a file works.
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "right-password\n").unwrap();
    set(&mut config, "mqtt.password_file", secret.to_str().unwrap());
    let client = TestClient::v5_with_login(broker.port, "pw-client", "sentimqd", "right-password");
    client.subscribe("pw/status");
    let _daemon = Daemon::spawn(dir.path(), "pw-ok", &config);
    client.wait_for_payload("pw/status", "online", START);
}
