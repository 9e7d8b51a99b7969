//! `maas tls self-signed`: a certificate and key for `maas-api`'s HTTPS on a private network,
//! whose subject alternative names hold every `--host` (IP addresses as IP SANs, names as DNS
//! SANs), so clients that trust the certificate can reach the server by any of them.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use chrono::{Datelike as _, NaiveDate};
use clap::Subcommand;
use maas_shared::clock::{Clock as _, SystemClock};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose,
};

/// `maas tls …`
#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Write a self-signed certificate (`cert.pem`) and its key (`key.pem`, mode 0600) for
    /// `server.tls_cert_file` / `server.tls_key_file`.
    SelfSigned {
        /// An IP address or DNS name the server is reached by (repeat for more).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        /// Where to write the files.
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: u32,
        /// Replace files that exist.
        #[arg(long)]
        force: bool,
    },
}

/// Runs a `maas tls` command.
///
/// # Errors
/// A host that is neither an IP address nor a DNS name; files that exist (without `--force`)
/// or cannot be written.
pub fn run(command: TlsCommand) -> anyhow::Result<()> {
    let TlsCommand::SelfSigned {
        hosts,
        out_dir,
        days,
        force,
    } = command;
    let (cert, key) = self_signed(&hosts, SystemClock.now().date_naive(), days)?;
    let cert_path = out_dir.join("cert.pem");
    let key_path = out_dir.join("key.pem");
    write(&cert_path, cert.as_bytes(), 0o644, force)?;
    write(&key_path, key.as_bytes(), 0o600, force)?;
    println!(
        "wrote {} and {} for {}; serve them with MAAS__SERVER__TLS_CERT_FILE={} MAAS__SERVER__TLS_KEY_FILE={}",
        cert_path.display(),
        key_path.display(),
        hosts.join(", "),
        cert_path.display(),
        key_path.display()
    );
    Ok(())
}

/// A self-signed certificate for `hosts`, valid from today for `days`, and its key (PEM).
fn self_signed(hosts: &[String], today: NaiveDate, days: u32) -> anyhow::Result<(String, String)> {
    let params = params(hosts, today, days)?;
    let key = KeyPair::generate().context("generating a key")?;
    let cert = params
        .self_signed(&key)
        .context("signing the certificate")?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// What the certificate for `hosts` says: IP and DNS SANs, a server certificate (no CA).
fn params(hosts: &[String], today: NaiveDate, days: u32) -> anyhow::Result<CertificateParams> {
    for host in hosts {
        anyhow::ensure!(
            !host.trim().is_empty() && !host.contains(char::is_whitespace),
            "--host `{host}` is neither an IP address nor a DNS name"
        );
    }
    let mut params = CertificateParams::new(hosts.to_vec())
        .with_context(|| format!("--host {}: not an IP address or DNS name", hosts.join(", ")))?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, hosts[0].clone());
    name.push(DnType::OrganizationName, "MaaS platform (self-signed)");
    params.distinguished_name = name;
    let until = today + chrono::Days::new(u64::from(days));
    let date = |d: NaiveDate| {
        rcgen::date_time_ymd(
            d.year(),
            u8::try_from(d.month()).unwrap_or(1),
            u8::try_from(d.day()).unwrap_or(1),
        )
    };
    params.not_before = date(today);
    params.not_after = date(until);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    Ok(params)
}

fn write(path: &Path, contents: &[u8], mode: u32, force: bool) -> anyhow::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).with_context(|| {
        format!(
            "writing {} (it exists? pass --force to replace it)",
            path.display()
        )
    })?;
    file.write_all(contents)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_become_the_subject_alternative_names() {
        let hosts = ["192.168.1.10".to_owned(), "gpu.local".to_owned()];
        let today = NaiveDate::from_ymd_opt(2026, 12, 2).unwrap();
        let (cert, key) = self_signed(&hosts, today, 30).unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
        let params = params(&hosts, today, 30).unwrap();
        assert_eq!(params.not_after, rcgen::date_time_ymd(2027, 1, 1));
        assert_eq!(params.is_ca, rcgen::IsCa::NoCa);
        let sans: Vec<String> = params
            .subject_alt_names
            .iter()
            .map(|san| format!("{san:?}"))
            .collect();
        assert_eq!(
            sans,
            [
                "IpAddress(192.168.1.10)",
                "DnsName(Ia5String(\"gpu.local\"))"
            ]
        );
    }

    #[test]
    fn a_host_with_spaces_is_refused() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 2).unwrap();
        let err = self_signed(&["gpu local".into()], today, 30).unwrap_err();
        assert!(err.to_string().contains("gpu local"), "{err}");
    }
}
