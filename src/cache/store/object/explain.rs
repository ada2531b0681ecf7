//! Explaining an object store's errors: each failed request becomes one [`Error`] naming the
//! object (`s3://BUCKET/PREFIX/rel`, `az://CONTAINER/…`) and the likely cause in words a user can
//! act on (credentials refused or missing, no such bucket or container, an `http://` endpoint not
//! allowed, an endpoint that cannot be reached, access denied), chosen by the store's [`Scheme`];
//! and the store's name for messages ([`store_name`]). Nothing here puts a credential in a
//! message: [`scrub`] removes any value of the secret `AWS_*` / `AZURE_*` variables.

use std::path::PathBuf;

use super::options::{shown_endpoint, ObjectOptions};
use crate::cache::url::{ObjectUrl, Scheme};
use crate::error::Error;

/// A message with anything that looks like a credential value removed (the client's errors name
/// URLs and keys, not headers; this is a second guard).
pub(super) fn scrub(msg: &str) -> String {
    let mut out = msg.to_string();
    for var in [
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AZURE_STORAGE_ACCOUNT_KEY",
        "AZURE_STORAGE_ACCESS_KEY",
        "AZURE_STORAGE_MASTER_KEY",
        "AZURE_STORAGE_SAS_KEY",
        "AZURE_STORAGE_SAS_TOKEN",
        "AZURE_STORAGE_TOKEN",
        "AZURE_STORAGE_CLIENT_SECRET",
        "AZURE_CLIENT_SECRET",
    ] {
        if let Ok(v) = std::env::var(var) {
            if v.len() >= 4 {
                out = out.replace(&v, "***");
            }
        }
    }
    out
}

/// The store at `o`'s endpoint (or `AWS_ENDPOINT_URL`'s) as messages name it, without user
/// information.
pub(super) fn store_name(url: &ObjectUrl, o: &ObjectOptions) -> String {
    let env = |var: &str| std::env::var(var).ok();
    let endpoint = o.endpoint.clone().or_else(|| match url.scheme {
        Scheme::S3 => env("AWS_ENDPOINT_URL"),
        Scheme::Azure => env("AZURE_STORAGE_ENDPOINT").or_else(|| env("AZURE_ENDPOINT")),
    });
    match (endpoint, url.scheme) {
        (Some(ep), _) => shown_endpoint(&ep),
        (None, Scheme::S3) => "the AWS S3 default endpoint".to_string(),
        (None, Scheme::Azure) => match env("AZURE_STORAGE_USE_EMULATOR").as_deref() {
            Some("true" | "1") => "the Azurite emulator (127.0.0.1:10000)".to_string(),
            _ => format!(
                "Azure Blob Storage account {}",
                env("AZURE_STORAGE_ACCOUNT_NAME").unwrap_or_else(|| "(unnamed)".into())
            ),
        },
    }
}

/// `s3://BUCKET/PREFIX/rel` (`az://CONTAINER/…`) as a path, for messages.
pub(super) fn rel_url(url: &ObjectUrl, rel: &str) -> PathBuf {
    PathBuf::from(format!(
        "{}://{}/{}",
        url.scheme.as_str(),
        url.bucket,
        url.key(rel)
    ))
}

/// An error of a request for `rel` under `url`: names the object, never a credential.
pub(super) fn obj_err(url: &ObjectUrl, rel: &str, e: object_store::Error) -> Error {
    obj_err_at(url.scheme, rel_url(url, rel), e)
}

/// [`obj_err`] for a full key.
pub(super) fn obj_err_key(url: &ObjectUrl, key: &str, e: object_store::Error) -> Error {
    obj_err_at(
        url.scheme,
        PathBuf::from(format!("{}://{}/{key}", url.scheme.as_str(), url.bucket)),
        e,
    )
}

/// An error of a request for the object at `at` in a store of kind `scheme`, explained
/// ([`explain`]).
fn obj_err_at(scheme: Scheme, at: PathBuf, e: object_store::Error) -> Error {
    let kind = match &e {
        object_store::Error::NotFound { .. } => std::io::ErrorKind::NotFound,
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => std::io::ErrorKind::PermissionDenied,
        _ => std::io::ErrorKind::Other,
    };
    let text = explain(scheme, &scrub(&e.to_string()));
    Error::io(at, std::io::Error::new(kind, text))
}

/// A store's error as one line a user can act on: the likely cause first where the answer shows
/// one (credentials refused, none found, no such bucket or container, an `http://` endpoint
/// without `AWS_ALLOW_HTTP`, an endpoint that cannot be reached, access denied), then the
/// client's own words without the XML body, and the store's error code in brackets.
fn explain(scheme: Scheme, raw: &str) -> String {
    let (keys, allow_http) = if scheme == Scheme::Azure {
        (
            "AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY (or a SAS)",
            "AZURE_ALLOW_HTTP=true",
        )
    } else {
        (
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            "AWS_ALLOW_HTTP=true",
        )
    };
    let has = |s: &str| raw.contains(s);
    let code = raw.split_once("<Code>").and_then(|(_, rest)| {
        rest.split_once("</Code>")
            .map(|(c, _)| c.trim().to_string())
    });
    let code_is = |c: &str| code.as_deref() == Some(c);
    let cause = if code_is("SignatureDoesNotMatch")
        || code_is("InvalidAccessKeyId")
        || code_is("AuthorizationFailure")
        || code_is("AuthenticationFailed")
    {
        Some(format!("the store refused the credentials: check {keys}"))
    } else if has("169.254.169.254") {
        Some(format!(
            "no credentials found: set {keys}, or name a profile (-o profile=NAME, \
             AWS_PROFILE); tried {}",
            super::credentials::aws_sources_tried(&Default::default())
        ))
    } else if code_is("NoSuchBucket") {
        Some("no such bucket at this endpoint".to_string())
    } else if code_is("ContainerNotFound") {
        Some("no such container in this storage account".to_string())
    } else if code_is("AccessDenied") {
        Some("the store denied access (the credentials lack permission here)".to_string())
    } else if has("builder error") && has("http://") {
        Some(format!("an http:// endpoint needs {allow_http}"))
    } else if has("error sending request") {
        Some("cannot reach the store (connection failed: is it up, is the endpoint right?)".into())
    } else {
        None
    };
    let words = raw.split("<?xml").next().unwrap_or(raw);
    let words = words.lines().next().unwrap_or("").trim();
    let words = words.trim_end_matches(|c: char| c == ':' || c.is_whitespace());
    let tail = match &code {
        Some(c) => format!("{words} [{c}]"),
        None => words.to_string(),
    };
    match cause {
        Some(c) => format!("{c} ({tail})"),
        None => tail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Store errors as users met them in a trial (Ceph RGW 16, Azurite 3.37, no endpoint): the
    /// cause first, one line, the code kept, no XML body.
    #[test]
    fn store_errors_say_the_likely_cause_in_one_line() {
        let (s3, az) = (Scheme::S3, Scheme::Azure);
        let signed =
            "The operation lacked the necessary privileges to complete for path p/conf.xml: \
            Error performing GET http://127.0.0.1:7480/b/p/conf.xml in 2ms - Server returned \
            non-2xx status code: 403 Forbidden: <?xml version=\"1.0\"?><Error><Code>\
            SignatureDoesNotMatch</Code><RequestId>tx1</RequestId></Error>";
        let m = explain(s3, signed);
        assert!(
            m.starts_with("the store refused the credentials: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
            "{m}"
        );
        assert!(m.ends_with("403 Forbidden [SignatureDoesNotMatch])"), "{m}");
        assert!(!m.contains("<?xml") && !m.contains('\n'), "{m}");
        let azure = "Server returned non-2xx status code: 403 Forbidden: <?xml version=\"1.0\"?>\n\
            <Error>\n  <Code>AuthorizationFailure</Code>\n  <Message>Server failed</Message>\n</Error>";
        let m = explain(az, azure);
        assert!(m.contains("check AZURE_STORAGE_ACCOUNT_NAME"), "{m}");
        assert!(!m.contains('\n'), "{m}");
        let m = explain(
            az,
            "Generic error: 404 Not Found: <?xml?><Error><Code>ContainerNotFound</Code></Error>",
        );
        assert!(m.starts_with("no such container"), "{m}");
        let m = explain(
            s3,
            "list: 404 Not Found: <?xml?><Error><Code>NoSuchBucket</Code></Error>",
        );
        assert!(m.starts_with("no such bucket"), "{m}");
        let m = explain(
            s3,
            "Error performing GET http://127.0.0.1:7480/b/p/conf.xml in 174µs - HTTP error: builder error",
        );
        assert!(
            m.starts_with("an http:// endpoint needs AWS_ALLOW_HTTP=true"),
            "{m}"
        );
        let m = explain(
            s3,
            "Error performing PUT http://169.254.169.254/latest/api/token in 1ms - 403 Forbidden",
        );
        assert!(
            m.starts_with("no credentials found: set AWS_ACCESS_KEY_ID"),
            "{m}"
        );
        let m = explain(
            s3,
            "Error performing GET http://127.0.0.1:7489/b in 529ms, after 4 retries - HTTP error: error sending request",
        );
        assert!(m.starts_with("cannot reach the store"), "{m}");
        assert_eq!(explain(s3, "something else"), "something else");
    }
}
