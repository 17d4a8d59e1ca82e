//! The KurrentDB connection string, checked before any connection is tried.
//!
//! The format is the client's: `kurrentdb://user:password@host:2113?tls=true` for one node,
//! `kurrentdb://user:password@node1:2113,node2:2113,node3:2113` for a cluster found through
//! gossip on those seeds, `kurrentdb+discover://user:password@cluster.dns:2113` for seeds
//! found through DNS. `esdb://`, `esdb+discover://`, `kurrent://` and `kdb://` are the same.
//! TLS is on unless `tls=false`; `tlsVerifyCert=false` accepts self-signed certificates,
//! `tlsCaFile=/path/ca.crt` names the cluster's CA. `nodePreference=leader` (the default)
//! sends every request to the leader.

use std::fmt;

/// A parsed connection string. Its `Display` hides the password.
#[derive(Clone)]
pub struct ConnectionString {
    text: String,
    settings: kurrentdb::ClientSettings,
}

/// Why a connection string was refused, saying what to fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "malformed KurrentDB connection string {redacted:?}: {reason}; expected \
     kurrentdb://user:password@host:2113[,host2:2113,...][?tls=true|false&...]"
)]
pub struct ConnectionStringError {
    redacted: String,
    reason: String,
}

/// The URL schemes the client accepts (`+discover` asks DNS for the cluster's nodes).
const SCHEMES: &[&str] = &["kurrentdb", "esdb", "kurrent", "kdb"];

impl ConnectionString {
    pub fn parse(text: &str) -> Result<ConnectionString, ConnectionStringError> {
        let refuse = |reason: String| ConnectionStringError {
            redacted: redact(text),
            reason,
        };
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(refuse(
                "it does not start with a scheme such as kurrentdb://".into(),
            ));
        };
        let base = scheme.strip_suffix("+discover").unwrap_or(scheme);
        if !SCHEMES.contains(&base) {
            return Err(refuse(format!(
                "scheme {scheme:?} is not one of kurrentdb, esdb, kurrent, kdb \
                 (optionally with +discover)"
            )));
        }
        let authority = rest.split(['?', '/']).next().unwrap_or_default();
        let hosts = authority
            .rsplit_once('@')
            .map_or(authority, |(_, hosts)| hosts);
        if hosts.is_empty() || hosts.split(',').any(str::is_empty) {
            return Err(refuse(
                "it names no host (or an empty one in a list)".into(),
            ));
        }
        let settings = text
            .parse::<kurrentdb::ClientSettings>()
            .map_err(|error| refuse(error.message().to_owned()))?;
        Ok(ConnectionString {
            text: text.to_owned(),
            settings,
        })
    }

    pub fn settings(&self) -> &kurrentdb::ClientSettings {
        &self.settings
    }

    /// Whether the connection uses TLS.
    pub fn is_tls(&self) -> bool {
        self.settings.is_secure_mode_enabled()
    }

    /// The nodes named (gossip seeds for a cluster), as `host:port`.
    pub fn hosts(&self) -> Vec<String> {
        self.settings
            .hosts()
            .iter()
            .map(|endpoint| format!("{}:{}", endpoint.host, endpoint.port))
            .collect()
    }

    pub fn is_dns_discovery(&self) -> bool {
        self.settings.is_dns_discovery_enabled()
    }
}

impl fmt::Display for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.text))
    }
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnectionString({})", redact(&self.text))
    }
}

/// The connection string with the password replaced, for logs and errors.
fn redact(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_owned();
    };
    let authority_end = rest.find(['?', '/']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, hosts)) => {
            let user = user_info
                .split_once(':')
                .map_or(user_info, |(user, _)| user);
            format!("{scheme}://{user}:***@{hosts}{tail}")
        }
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_node_with_tls_by_default() {
        let parsed = ConnectionString::parse("kurrentdb://admin:changeit@localhost:2113").unwrap();
        assert!(parsed.is_tls());
        assert_eq!(parsed.hosts(), vec!["localhost:2113"]);
        assert!(!parsed.is_dns_discovery());
        let insecure = ConnectionString::parse("esdb://localhost:2113?tls=false").unwrap();
        assert!(!insecure.is_tls());
        let default_port = ConnectionString::parse("kurrentdb://db.internal").unwrap();
        assert_eq!(default_port.hosts(), vec!["db.internal:2113"]);
    }

    #[test]
    fn cluster_gossip_seeds_and_dns_discovery() {
        let cluster = ConnectionString::parse(
            "kurrentdb://admin:changeit@node1:2113,node2:2113,node3:2113?tlsVerifyCert=false",
        )
        .unwrap();
        assert_eq!(
            cluster.hosts(),
            vec!["node1:2113", "node2:2113", "node3:2113"]
        );
        assert!(cluster.is_tls());
        let discover =
            ConnectionString::parse("kurrentdb+discover://admin:changeit@cluster.internal:2113")
                .unwrap();
        assert!(discover.is_dns_discovery());
    }

    #[test]
    fn malformed_strings_are_refused_with_a_reason() {
        let cases = [
            ("localhost:2113", "scheme"),
            ("postgres://localhost:5432", "is not one of"),
            ("kurrentdb://", "no host"),
            ("kurrentdb://admin:pw@", "no host"),
            ("kurrentdb://node1:2113,,node3:2113", "no host"),
            ("kurrentdb://localhost:2113?tls=maybe", "tls"),
            ("kurrentdb://localhost:2113?nodePreference=nobody", "nobody"),
        ];
        for (text, want) in cases {
            let error = ConnectionString::parse(text).unwrap_err();
            let message = error.to_string();
            assert!(
                message.contains(want),
                "{text:?}: {message:?} lacks {want:?}"
            );
            assert!(message.contains("expected kurrentdb://"), "{message}");
        }
    }

    #[test]
    fn passwords_never_show() {
        let parsed =
            ConnectionString::parse("kurrentdb://admin:s3cret@node1:2113?tls=false").unwrap();
        assert_eq!(
            parsed.to_string(),
            "kurrentdb://admin:***@node1:2113?tls=false"
        );
        assert!(!format!("{parsed:?}").contains("s3cret"));
        let error = ConnectionString::parse("kurrentdb://admin:s3cret@node1:2113?tls=maybe")
            .unwrap_err()
            .to_string();
        assert!(!error.contains("s3cret"), "{error}");
        assert_eq!(redact("kurrentdb://node1:2113"), "kurrentdb://node1:2113");
    }
}
