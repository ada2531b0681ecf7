//! Credentials of a cache in an object store, found as the AWS CLI finds them (S3) and from a
//! file (Azure), for mounts started by fstab or systemd, which pass no environment.
//!
//! S3, first found wins (the AWS CLI's order, "Configuration and credential file settings" of the
//! AWS CLI user guide):
//! 1. a profile named by `-o profile=NAME`;
//! 2. `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`);
//! 3. a profile named by `AWS_PROFILE`;
//! 4. web identity (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`: Kubernetes service accounts)
//!    and container credentials (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`/`_FULL_URI`), which
//!    the `object_store` client reads itself;
//! 5. the `default` profile, when the files hold one;
//! 6. the instance metadata service (the client's last resort).
//!
//! Profiles are read from the shared credentials file (`-o credentials_file=FILE`, else
//! `AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`; sections `[NAME]`) and the config
//! file (`AWS_CONFIG_FILE`, else `~/.aws/config`; sections `[profile NAME]` and `[default]`),
//! parsed by `rust-ini`. Keys: `aws_access_key_id`, `aws_secret_access_key`,
//! `aws_session_token`, `region`, `endpoint_url`. A profile that gets its keys another way
//! (`role_arn`, `source_profile`, `credential_process`, `sso_*`) is refused by name. `~` is the
//! home of the effective user when `HOME` is unset (systemd units).
//!
//! Azure: `-o credentials_file=FILE` holds `KEY=VALUE` lines of the client's settings
//! (`AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`, `AZURE_STORAGE_SAS_TOKEN`, …, the
//! names `object_store` reads from the environment); `#` starts a comment.
//!
//! No secret is ever put in a message: errors name files, profiles and keys, never values.

use std::path::{Path, PathBuf};

use object_store::aws::AmazonS3Builder;
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};

use super::options::ObjectOptions;
use crate::error::{Error, Result};

/// Where an S3 client's credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AwsSource {
    /// A profile of the shared files.
    Profile {
        /// The profile's name.
        name: String,
        /// The file its keys came from.
        file: PathBuf,
    },
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    Environment,
    /// Web identity or container credentials, read by the client.
    Delegated,
    /// Nothing found before the instance metadata service, which the client asks last.
    InstanceMetadata,
}

/// A profile's settings (secrets included: never displayed).
#[derive(Default)]
struct Profile {
    key_id: Option<String>,
    secret: Option<String>,
    token: Option<String>,
    region: Option<String>,
    endpoint: Option<String>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The effective user's home: `HOME`, else the password database's entry.
fn home() -> Option<PathBuf> {
    env("HOME").map(PathBuf::from).or_else(|| {
        nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|u| u.dir)
    })
}

/// The shared credentials file and the config file in force for `o`.
fn files(o: &ObjectOptions) -> (Option<PathBuf>, Option<PathBuf>) {
    let creds = o
        .credentials_file
        .clone()
        .or_else(|| env("AWS_SHARED_CREDENTIALS_FILE").map(PathBuf::from))
        .or_else(|| home().map(|h| h.join(".aws/credentials")));
    let config = env("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".aws/config")));
    (creds, config)
}

/// The file's INI sections, or None when it does not exist. Errors: unreadable or not INI.
fn read_ini(path: &Path) -> Result<Option<ini::Ini>> {
    match std::fs::read_to_string(path) {
        Ok(text) => ini::Ini::load_from_str_noescape(&text)
            .map(Some)
            .map_err(|e| Error::invalid(format!("{}: not an AWS INI file: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Ways of getting keys bundlefs does not follow, refused by name.
const UNSUPPORTED: &[&str] = &[
    "role_arn",
    "source_profile",
    "credential_process",
    "sso_session",
    "sso_start_url",
    "sso_account_id",
    "web_identity_token_file",
];

/// Profile `name` from the files of `o`; None when neither file has it.
fn profile(name: &str, o: &ObjectOptions) -> Result<Option<(Profile, PathBuf)>> {
    let (creds_file, config_file) = files(o);
    let mut p = Profile::default();
    let mut found: Option<PathBuf> = None;
    let config_section = if name == "default" {
        "default".to_string()
    } else {
        format!("profile {name}")
    };
    for (file, section) in [
        (config_file, config_section),
        (creds_file, name.to_string()),
    ] {
        let Some(file) = file else { continue };
        let Some(ini) = read_ini(&file)? else {
            continue;
        };
        let Some(props) = ini.section(Some(section.as_str())) else {
            continue;
        };
        if let Some(k) = UNSUPPORTED.iter().find(|k| props.contains_key(**k)) {
            return Err(Error::invalid(format!(
                "{}: profile {name} gets its keys by {k}, which bundlefs does not support; give \
                 the profile aws_access_key_id and aws_secret_access_key, or use web identity \
                 (AWS_ROLE_ARN with AWS_WEB_IDENTITY_TOKEN_FILE)",
                file.display()
            )));
        }
        let get = |k: &str| props.get(k).map(str::trim).filter(|v| !v.is_empty());
        // The credentials file's keys win over the config file's (read second).
        for (slot, key) in [
            (&mut p.key_id, "aws_access_key_id"),
            (&mut p.secret, "aws_secret_access_key"),
            (&mut p.token, "aws_session_token"),
            (&mut p.region, "region"),
            (&mut p.endpoint, "endpoint_url"),
        ] {
            if let Some(v) = get(key) {
                *slot = Some(v.to_string());
            }
        }
        if p.key_id.is_some() || p.secret.is_some() {
            found = Some(file.clone());
        }
        found.get_or_insert(file);
    }
    Ok(found.map(|f| (p, f)))
}

/// The sources tried, for a message when none gave credentials.
pub fn aws_sources_tried(o: &ObjectOptions) -> String {
    let (creds, config) = files(o);
    let shown =
        |f: Option<PathBuf>| f.map_or("(no home folder)".into(), |f| f.display().to_string());
    format!(
        "-o profile=NAME, AWS_ACCESS_KEY_ID with AWS_SECRET_ACCESS_KEY, AWS_PROFILE, web identity \
         (AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN), container credentials \
         (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI), the default profile of {} and {}, and the \
         instance metadata service",
        shown(creds),
        shown(config)
    )
}

/// Sets the credentials (and a profile's region and endpoint, where neither `o` nor the
/// environment gives one) of an S3 client made by `AmazonS3Builder::from_env()`, and says where
/// they came from. Errors: a profile asked for (`-o profile`, `AWS_PROFILE`) that neither file
/// holds, or holds without both keys, naming the profile and files; unreadable files.
pub fn apply_aws(b: AmazonS3Builder, o: &ObjectOptions) -> Result<(AmazonS3Builder, AwsSource)> {
    let asked = o.profile.clone().map(|p| (p, "-o profile")).or_else(|| {
        if env("AWS_ACCESS_KEY_ID").is_some() {
            None
        } else {
            env("AWS_PROFILE").map(|p| (p, "AWS_PROFILE"))
        }
    });
    let (name, must) = match asked {
        Some((n, by)) => (n, Some(by)),
        None if env("AWS_ACCESS_KEY_ID").is_some() => return Ok((b, AwsSource::Environment)),
        None if env("AWS_WEB_IDENTITY_TOKEN_FILE").is_some()
            || env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_some()
            || env("AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some() =>
        {
            return Ok((b, AwsSource::Delegated))
        }
        None => ("default".to_string(), None),
    };
    let (creds_file, config_file) = files(o);
    let files_shown = format!(
        "{} or {}",
        creds_file
            .as_deref()
            .map_or("-".into(), |f| f.display().to_string()),
        config_file
            .as_deref()
            .map_or("-".into(), |f| f.display().to_string())
    );
    let p = match (profile(&name, o)?, must) {
        (Some(p), _) => p,
        (None, Some(by)) => {
            return Err(Error::invalid(format!(
                "{by}: no profile {name} in {files_shown}"
            )))
        }
        (None, None) => return Ok((b, AwsSource::InstanceMetadata)),
    };
    let (p, file) = p;
    let (Some(id), Some(secret)) = (p.key_id, p.secret) else {
        return match must {
            Some(by) => Err(Error::invalid(format!(
                "{by}: profile {name} in {} lacks aws_access_key_id or aws_secret_access_key",
                file.display()
            ))),
            None => Ok((b, AwsSource::InstanceMetadata)),
        };
    };
    let mut b = b.with_access_key_id(id).with_secret_access_key(secret);
    if let Some(t) = p.token {
        b = b.with_token(t);
    }
    if o.region.is_none() && env("AWS_REGION").is_none() && env("AWS_DEFAULT_REGION").is_none() {
        if let Some(r) = p.region {
            b = b.with_region(r);
        }
    }
    if o.endpoint.is_none() && env("AWS_ENDPOINT_URL").is_none() && env("AWS_ENDPOINT").is_none() {
        if let Some(e) = p.endpoint {
            b = b.with_endpoint(&e);
            if e.starts_with("http://") {
                b = b.with_allow_http(true);
            }
        }
    }
    Ok((b, AwsSource::Profile { name, file }))
}

/// Sets an Azure client's settings from `-o credentials_file=FILE` (`KEY=VALUE` lines of the
/// names `object_store` reads from the environment). Errors: an unreadable file, a line that is
/// no `KEY=VALUE`, or a key the client does not know, naming the file and line (never a value).
pub fn apply_azure(
    mut b: MicrosoftAzureBuilder,
    o: &ObjectOptions,
) -> Result<MicrosoftAzureBuilder> {
    let Some(file) = &o.credentials_file else {
        return Ok(b);
    };
    let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| Error::invalid(format!("{}: line {}: {why}", file.display(), i + 1));
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| bad("want KEY=VALUE, e.g. AZURE_STORAGE_ACCOUNT_KEY=…"))?;
        let key: AzureConfigKey = k
            .trim()
            .to_ascii_lowercase()
            .parse()
            .map_err(|_| bad(&format!("{}: not a setting of the Azure client", k.trim())))?;
        b = b.with_config(key, v.trim().trim_matches('"'));
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files under a temp home; returns the options naming the credentials file.
    fn setup(creds: &str, config: &str) -> (tempfile::TempDir, ObjectOptions) {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("credentials"), creds).unwrap();
        std::fs::write(d.path().join("config"), config).unwrap();
        let o = ObjectOptions {
            credentials_file: Some(d.path().join("credentials")),
            ..Default::default()
        };
        (d, o)
    }

    #[test]
    fn profiles_are_read_and_refused_by_name() {
        let (d, mut o) = setup(
            "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = s3cr3t/x\n\n\
             [tiles]\naws_access_key_id=AKIDTILES\naws_secret_access_key=an0ther\naws_session_token=tok\n\
             [nokeys]\nregion = eu-west-1\n",
            "",
        );
        // Not through AWS_CONFIG_FILE (process-wide): the config file is read from the home
        // folder, which here has none; the credentials file is named by the option.
        let _ = d;
        o.profile = Some("tiles".into());
        let (p, f) = profile("tiles", &o).unwrap().unwrap();
        assert_eq!(p.key_id.as_deref(), Some("AKIDTILES"));
        assert_eq!(p.token.as_deref(), Some("tok"));
        assert!(f.ends_with("credentials"));
        let (p, _) = profile("default", &o).unwrap().unwrap();
        assert_eq!(
            p.secret.as_deref(),
            Some("s3cr3t/x"),
            "no escape processing"
        );
        assert!(profile("missing", &o).unwrap().is_none());
        let e = apply_aws(
            AmazonS3Builder::new(),
            &ObjectOptions {
                profile: Some("missing".into()),
                ..o.clone()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("no profile missing in") && e.contains("credentials"),
            "{e}"
        );
        let e = apply_aws(
            AmazonS3Builder::new(),
            &ObjectOptions {
                profile: Some("nokeys".into()),
                ..o.clone()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("profile nokeys") && e.contains("lacks aws_access_key_id"),
            "{e}"
        );
        let (_, src) = apply_aws(AmazonS3Builder::new(), &o).unwrap();
        assert!(
            matches!(src, AwsSource::Profile { ref name, .. } if name == "tiles"),
            "{src:?}"
        );
        // No secret in any message.
        assert!(!e.contains("an0ther") && !e.contains("s3cr3t"));
    }

    #[test]
    fn a_profile_getting_keys_another_way_is_refused_by_name() {
        let (_d, mut o) = setup("[sso]\nsso_start_url = https://x\n", "");
        o.profile = Some("sso".into());
        let e = apply_aws(AmazonS3Builder::new(), &o)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("profile sso gets its keys by sso_start_url"),
            "{e}"
        );
    }

    #[test]
    fn azure_settings_from_a_file() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("az.env");
        std::fs::write(
            &f,
            "# the account\nAZURE_STORAGE_ACCOUNT_NAME=acct\nAZURE_STORAGE_ACCOUNT_KEY=\"a2V5\"\n",
        )
        .unwrap();
        let o = ObjectOptions {
            credentials_file: Some(f.clone()),
            ..Default::default()
        };
        let b = apply_azure(MicrosoftAzureBuilder::new(), &o).unwrap();
        assert_eq!(
            b.get_config_value(&AzureConfigKey::AccountName).as_deref(),
            Some("acct")
        );
        std::fs::write(&f, "AZURE_STORAGE_ACCOUNT_KEY=secretvalue\nBOGUS_THING=1\n").unwrap();
        let e = apply_azure(MicrosoftAzureBuilder::new(), &o)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("BOGUS_THING"), "{e}");
        assert!(!e.contains("secretvalue"));
    }
}
