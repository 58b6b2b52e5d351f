//! Certificate authorities and certificates made at test time with the
//! `openssl` command (Debian's `openssl` package), in a temporary directory.

use std::process::Command;

use super::which;

/// A directory of certificate authorities and the certificates they issued.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Self {
        assert!(
            which("openssl").is_some(),
            "the openssl command was not found on PATH: install Debian's `openssl` package"
        );
        Pki {
            dir: tempfile::Builder::new()
                .prefix("med-pki-")
                .tempdir()
                .unwrap(),
        }
    }

    /// The path of file `name` in the directory.
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    pub fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// An authority `name`: `name.pem` and `name.key`.
    pub fn authority(&self, name: &str) -> &Self {
        let config = format!(
            "[req]\ndistinguished_name = dn\nx509_extensions = ca\nprompt = no\n\
             [dn]\nCN = {name}\n\
             [ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n"
        );
        std::fs::write(self.dir.path().join(format!("{name}.cnf")), config).unwrap();
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-config",
            &format!("{name}.cnf"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ]);
        self
    }

    /// A certificate `name` (`name.pem`, `name.key`) issued by `ca` for the
    /// names `san` (`IP:127.0.0.1`, `DNS:elsewhere.example`).
    pub fn issue(&self, ca: &str, name: &str, san: &str) -> &Self {
        self.issue_for_days(ca, name, san, "2")
    }

    /// Like [`Pki::issue`], a certificate that expired a day ago (OpenSSL
    /// 3.0's `x509` has no `-not_after`: a negative `-days` ends it a day
    /// before it begins, which a verifier calls expired all the same).
    pub fn issue_expired(&self, ca: &str, name: &str, san: &str) -> &Self {
        self.issue_for_days(ca, name, san, "-1")
    }

    fn issue_for_days(&self, ca: &str, name: &str, san: &str, days: &str) -> &Self {
        self.openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ]);
        let ext = format!(
            "basicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature\n\
             extendedKeyUsage = serverAuth,clientAuth\nsubjectAltName = {san}\n"
        );
        std::fs::write(self.dir.path().join(format!("{name}.ext")), ext).unwrap();
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            days,
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ]);
        self
    }

    /// VictoriaMetrics' flags to serve https with certificate `name`.
    pub fn tls_flags(&self, name: &str) -> [String; 3] {
        [
            "-tls".into(),
            format!("-tlsCertFile={}", self.path(&format!("{name}.pem"))),
            format!("-tlsKeyFile={}", self.path(&format!("{name}.key"))),
        ]
    }
}
