//! Static keys from the AWS shared credentials file (`~/.aws/credentials`, or
//! `AWS_SHARED_CREDENTIALS_FILE`), for the profile `AWS_PROFILE` names (else `default`):
//! the one step of the AWS SDKs' credential chain that `object_store` leaves out. Roles
//! (`role_arn`, SSO, `credential_process`) are the SDK's and are not read here; a profile
//! holding none of the two keys is passed over, and the chain goes on (web identity,
//! container and instance roles).

use std::path::PathBuf;

use super::config::StaticCredentials;

/// The profile's keys, when the file exists and the profile holds both.
pub fn shared_file_credentials(env: impl Fn(&str) -> Option<String>) -> Option<StaticCredentials> {
    let path = match env("AWS_SHARED_CREDENTIALS_FILE").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env("HOME").filter(|h| !h.is_empty())?).join(".aws").join("credentials"),
    };
    let text = std::fs::read_to_string(path).ok()?;
    let profile = env("AWS_PROFILE").filter(|p| !p.trim().is_empty()).unwrap_or_else(|| "default".to_owned());
    profile_keys(&text, profile.trim())
}

/// The INI file's section `[profile]`, its `aws_access_key_id`, `aws_secret_access_key`
/// and `aws_session_token`.
pub fn profile_keys(text: &str, profile: &str) -> Option<StaticCredentials> {
    let (mut inside, mut id, mut secret, mut token) = (false, None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == profile;
            continue;
        }
        if !inside {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else { continue };
        let value = Some(value.trim().to_owned()).filter(|v| !v.is_empty());
        match key.trim().to_ascii_lowercase().as_str() {
            "aws_access_key_id" => id = value,
            "aws_secret_access_key" => secret = value,
            "aws_session_token" => token = value,
            _ => {}
        }
    }
    Some(StaticCredentials { access_key_id: id?, secret_access_key: secret?, session_token: token })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# comment\n[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key=s1\n\n\
                        [archive]\n; another\naws_access_key_id = AKIAARCHIVE\naws_secret_access_key = s2\naws_session_token = t2\n\
                        [role-only]\nrole_arn = arn:aws:iam::1:role/x\n";

    #[test]
    fn the_named_profile_gives_its_keys_and_a_role_only_profile_none() {
        let d = profile_keys(FILE, "default").unwrap();
        assert_eq!(
            (d.access_key_id.as_str(), d.secret_access_key.as_str(), d.session_token),
            ("AKIADEFAULT", "s1", None)
        );
        let a = profile_keys(FILE, "archive").unwrap();
        assert_eq!((a.access_key_id.as_str(), a.session_token.as_deref()), ("AKIAARCHIVE", Some("t2")));
        assert!(profile_keys(FILE, "role-only").is_none());
        assert!(profile_keys(FILE, "absent").is_none());
    }

    #[test]
    fn the_file_and_profile_come_from_the_environment() {
        let dir = std::env::temp_dir().join(format!("gencol-aws-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("credentials");
        std::fs::write(&file, FILE).unwrap();
        let path = file.to_string_lossy().into_owned();
        let env = |profile: Option<&'static str>| {
            let path = path.clone();
            move |k: &str| match k {
                "AWS_SHARED_CREDENTIALS_FILE" => Some(path.clone()),
                "AWS_PROFILE" => profile.map(str::to_owned),
                _ => None,
            }
        };
        assert_eq!(shared_file_credentials(env(None)).unwrap().access_key_id, "AKIADEFAULT");
        assert_eq!(shared_file_credentials(env(Some("archive"))).unwrap().access_key_id, "AKIAARCHIVE");
        assert!(shared_file_credentials(|_| None).is_none(), "no HOME, no file");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
