//! `mqtt.server`: the broker URL, `mqtt://host[:port]` or `mqtts://host[:port]`.

use std::fmt;
use std::str::FromStr;

/// Where the broker is and whether to speak TLS to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerAddress {
    /// `true` for `mqtts://`.
    pub is_tls: bool,
    /// Host name or IP address (without IPv6 brackets). Also the TLS server name.
    pub host: String,
    /// TCP port (default 1883, or 8883 with TLS).
    pub port: u16,
}

/// Why `mqtt.server` is not a broker URL.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServerError {
    /// No `mqtt://` or `mqtts://` prefix.
    #[error("{0:?} has no scheme; write mqtt://host:1883 or mqtts://host:8883")]
    NoScheme(String),
    /// A scheme other than the two supported.
    #[error("scheme {0:?} is not supported; use mqtt:// (TCP) or mqtts:// (TLS)")]
    Scheme(String),
    /// Nothing between `://` and the port.
    #[error("{0:?} has no host")]
    NoHost(String),
    /// The port is not a number in 1..=65535.
    #[error("{0:?} has an invalid port")]
    Port(String),
    /// A path, query or credentials, which the daemon would silently ignore.
    #[error("{0:?} has a path, query or user part; give only scheme, host and port (credentials go in mqtt.username / mqtt.password_file)")]
    Extra(String),
}

impl FromStr for ServerAddress {
    type Err = ServerError;

    fn from_str(url: &str) -> Result<Self, ServerError> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| ServerError::NoScheme(url.to_string()))?;
        let is_tls = match scheme {
            "mqtt" => false,
            "mqtts" => true,
            other => return Err(ServerError::Scheme(other.to_string())),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '@', '#']) {
            return Err(ServerError::Extra(url.to_string()));
        }
        let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| ServerError::NoHost(url.to_string()))?;
            (host, after.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(ServerError::NoHost(url.to_string()));
        }
        let port = match port {
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| ServerError::Port(url.to_string()))?,
            None if is_tls => 8883,
            None => 1883,
        };
        Ok(ServerAddress {
            is_tls,
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.is_tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<ServerAddress, ServerError> {
        url.parse()
    }

    #[test]
    fn parses_schemes_hosts_and_default_ports() {
        assert_eq!(
            parse("mqtt://localhost").unwrap(),
            ServerAddress {
                is_tls: false,
                host: "localhost".into(),
                port: 1883
            }
        );
        let tls = parse("mqtts://broker.lan").unwrap();
        assert!(tls.is_tls);
        assert_eq!(tls.port, 8883);
        assert_eq!(parse("mqtt://127.0.0.1:1884/").unwrap().port, 1884);
        let v6 = parse("mqtt://[::1]:1999").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 1999));
        assert_eq!(v6.to_string(), "mqtt://[::1]:1999");
    }

    #[test]
    fn rejects_what_it_would_ignore() {
        assert!(matches!(
            parse("localhost:1883"),
            Err(ServerError::NoScheme(_))
        ));
        assert!(matches!(parse("ws://h"), Err(ServerError::Scheme(_))));
        assert!(matches!(parse("mqtt://:1883"), Err(ServerError::NoHost(_))));
        assert!(matches!(parse("mqtt://h:0"), Err(ServerError::Port(_))));
        assert!(matches!(parse("mqtt://h:x"), Err(ServerError::Port(_))));
        assert!(matches!(parse("mqtt://u:p@h"), Err(ServerError::Extra(_))));
    }
}
