//! Why a connection to PostgreSQL was refused for TLS, read from sqlx's
//! error, with what to do: the same words in `check` and in the daemon's
//! and `once`'s logs.

use std::error::Error as StdError;

use rustls::{AlertDescription, CertificateError};

/// A TLS refusal: the server's certificate, ours, or TLS itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsRefusal {
    /// The server's certificate comes from an authority not among the roots.
    UnknownAuthority,
    /// The server's certificate does not name the host connected to.
    WrongHostName {
        /// The host connected to, when rustls said.
        expected: Option<String>,
        /// The names the certificate holds, when rustls said.
        presented: Vec<String>,
    },
    /// The server's certificate has expired.
    Expired,
    /// The server's certificate is not valid yet (a clock is wrong).
    NotYetValid,
    /// The server's certificate was refused for another reason.
    BadCertificate(String),
    /// The server does not offer TLS and the mode requires it.
    ServerWithoutTls,
    /// The server accepts only encrypted connections (`hostssl` in
    /// pg_hba.conf) and the mode is `disable`.
    EncryptionRequired,
    /// The server wants a client certificate, or refused ours.
    ClientCertificate(String),
}

impl TlsRefusal {
    /// The refusal `e` is, if it is one.
    pub fn of(e: &sqlx::Error) -> Option<Self> {
        match e {
            sqlx::Error::Tls(inner) if inner.to_string().contains("does not support TLS") => {
                return Some(TlsRefusal::ServerWithoutTls)
            }
            sqlx::Error::Database(db) if db.code().as_deref() == Some("28000") => {
                let message = db.message();
                if message.contains("no encryption") {
                    return Some(TlsRefusal::EncryptionRequired);
                }
                if message.contains("certificate") {
                    return Some(TlsRefusal::ClientCertificate(message.to_string()));
                }
                return None;
            }
            _ => {}
        }
        let mut next: Option<&(dyn StdError + 'static)> = Some(e);
        while let Some(err) = next {
            if let Some(r) = err.downcast_ref::<rustls::Error>() {
                return Self::of_rustls(r);
            }
            // io::Error::source() skips the error it wraps: look at it.
            if let Some(inner) = err
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
            {
                if let Some(r) = inner.downcast_ref::<rustls::Error>() {
                    return Self::of_rustls(r);
                }
            }
            next = err.source();
        }
        None
    }

    fn of_rustls(e: &rustls::Error) -> Option<Self> {
        Some(match e {
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer => TlsRefusal::UnknownAuthority,
                CertificateError::NotValidForName => TlsRefusal::WrongHostName {
                    expected: None,
                    presented: Vec::new(),
                },
                CertificateError::NotValidForNameContext {
                    expected,
                    presented,
                } => TlsRefusal::WrongHostName {
                    expected: Some(server_name(expected)),
                    presented: presented.iter().map(|n| bare_name(n)).collect(),
                },
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    TlsRefusal::Expired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    TlsRefusal::NotYetValid
                }
                other => TlsRefusal::BadCertificate(
                    rustls::Error::InvalidCertificate(other.clone()).to_string(),
                ),
            },
            rustls::Error::AlertReceived(
                a @ (AlertDescription::CertificateRequired
                | AlertDescription::BadCertificate
                | AlertDescription::UnknownCA
                | AlertDescription::CertificateUnknown
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateRevoked
                | AlertDescription::UnsupportedCertificate),
            ) => TlsRefusal::ClientCertificate(format!("the server sent the TLS alert {a:?}")),
            _ => return None,
        })
    }

    /// What to do about it.
    pub fn fix(&self) -> String {
        match self {
            TlsRefusal::UnknownAuthority => "give DATABASE_URL the certificate of the authority that issued the server's (PEM): sslrootcert=/path/to/ca.pem, with sslmode=verify-full".into(),
            TlsRefusal::WrongHostName { expected, presented } => {
                let names = if presented.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", presented.join(", "))
                };
                let host = expected.as_deref().unwrap_or("the URL's host");
                format!("connect by a host name the certificate holds{names}, or give the server a certificate naming {host} (its subjectAltName)")
            }
            TlsRefusal::Expired => "renew the server's certificate (PostgreSQL's ssl_cert_file), then reload PostgreSQL (SELECT pg_reload_conf())".into(),
            TlsRefusal::NotYetValid => "check the clocks of both machines (NTP), or the certificate's start date".into(),
            TlsRefusal::BadCertificate(_) => "check the server's certificate (PostgreSQL's ssl_cert_file) and DATABASE_URL's sslrootcert".into(),
            TlsRefusal::ServerWithoutTls => "turn TLS on in PostgreSQL (ssl = on, ssl_cert_file, ssl_key_file in postgresql.conf), or lower DATABASE_URL's sslmode to prefer on a network you trust".into(),
            TlsRefusal::EncryptionRequired => "the server accepts only TLS (hostssl in pg_hba.conf): set sslmode=verify-full with sslrootcert in DATABASE_URL (or sslmode=require)".into(),
            TlsRefusal::ClientCertificate(_) => "give DATABASE_URL a client certificate the server's authority (ssl_ca_file) issued, its CN the database user: sslcert=/path/client.pem&sslkey=/path/client.key".into(),
        }
    }
}

impl std::fmt::Display for TlsRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsRefusal::UnknownAuthority => f.write_str("the server's certificate was refused: unknown authority (not issued by sslrootcert's authority nor a public one)"),
            TlsRefusal::WrongHostName { expected, presented } => {
                f.write_str("the server's certificate was refused: wrong host name")?;
                if let Some(e) = expected {
                    write!(f, " (it does not name {e}")?;
                    if !presented.is_empty() {
                        write!(f, "; it names {}", presented.join(", "))?;
                    }
                    f.write_str(")")?;
                }
                Ok(())
            }
            TlsRefusal::Expired => f.write_str("the server's certificate was refused: expired"),
            TlsRefusal::NotYetValid => f.write_str("the server's certificate was refused: not valid yet"),
            TlsRefusal::BadCertificate(why) => write!(f, "the server's certificate was refused: {why}"),
            TlsRefusal::ServerWithoutTls => f.write_str("the server does not offer TLS, which sslmode requires"),
            TlsRefusal::EncryptionRequired => f.write_str("the server refuses unencrypted connections, and sslmode=disable"),
            TlsRefusal::ClientCertificate(why) => write!(f, "the server wants a client certificate, or refused ours ({why})"),
        }
    }
}

/// A name as webpki presents it (`DnsName("db.home")`, `IpAddress(10.0.0.2)`),
/// as one writes it.
fn bare_name(n: &str) -> String {
    match n.split_once('(') {
        Some((_, rest)) => rest.trim_end_matches(')').trim_matches('"').to_string(),
        None => n.to_string(),
    }
}

/// A server name as written (rustls' Debug spells `DnsName("…")`).
fn server_name(name: &rustls::pki_types::ServerName<'_>) -> String {
    use rustls::pki_types::ServerName;
    match name {
        ServerName::DnsName(d) => d.as_ref().to_string(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_tls(e: rustls::Error) -> sqlx::Error {
        sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    #[test]
    fn a_certificate_refused_is_named_by_its_reason_through_sqlxs_io_error() {
        let unknown = io_tls(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
        assert_eq!(TlsRefusal::of(&unknown), Some(TlsRefusal::UnknownAuthority));
        let expired = io_tls(rustls::Error::InvalidCertificate(CertificateError::Expired));
        assert_eq!(TlsRefusal::of(&expired), Some(TlsRefusal::Expired));
        let name = io_tls(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForNameContext {
                expected: rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
                presented: vec!["DnsName(\"db.home\")".into(), "IpAddress(10.0.0.2)".into()],
            },
        ));
        let refusal = TlsRefusal::of(&name).unwrap();
        assert!(
            refusal.to_string().contains(
                "wrong host name (it does not name 127.0.0.1; it names db.home, 10.0.0.2)"
            ),
            "{refusal}"
        );
        assert!(
            refusal.fix().contains("naming 127.0.0.1"),
            "{}",
            refusal.fix()
        );
    }

    #[test]
    fn sqlxs_own_tls_error_and_postgresqls_refusals_are_named() {
        let no_tls = sqlx::Error::Tls("server does not support TLS".into());
        assert_eq!(TlsRefusal::of(&no_tls), Some(TlsRefusal::ServerWithoutTls));
        assert_eq!(TlsRefusal::of(&sqlx::Error::PoolTimedOut), None);
        let other_io = sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        ));
        assert_eq!(TlsRefusal::of(&other_io), None);
        let alert = io_tls(rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired,
        ));
        assert!(matches!(
            TlsRefusal::of(&alert),
            Some(TlsRefusal::ClientCertificate(_))
        ));
    }

    #[test]
    fn every_refusal_says_what_to_do() {
        for r in [
            TlsRefusal::UnknownAuthority,
            TlsRefusal::WrongHostName {
                expected: None,
                presented: vec![],
            },
            TlsRefusal::Expired,
            TlsRefusal::NotYetValid,
            TlsRefusal::BadCertificate("x".into()),
            TlsRefusal::ServerWithoutTls,
            TlsRefusal::EncryptionRequired,
            TlsRefusal::ClientCertificate("x".into()),
        ] {
            assert!(!r.to_string().is_empty() && !r.fix().is_empty());
        }
        assert!(TlsRefusal::UnknownAuthority.fix().contains("sslrootcert="));
        assert!(TlsRefusal::Expired.fix().contains("renew"));
    }
}
