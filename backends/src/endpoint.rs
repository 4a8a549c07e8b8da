//! A store's endpoint as configured: an absolute `http(s)://host…` URL, checked when
//! the configuration is read so nothing downstream parses it again.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An `http://` or `https://` URL with a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HttpEndpoint(url::Url);

impl HttpEndpoint {
    /// The URL.
    pub fn as_url(&self) -> &url::Url {
        &self.0
    }

    /// The URL as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl FromStr for HttpEndpoint {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, String> {
        url::Url::parse(raw)
            .ok()
            .filter(|u| ["http", "https"].contains(&u.scheme()) && u.host_str().is_some())
            .map(HttpEndpoint)
            .ok_or_else(|| format!("{raw:?} is not an http:// or https:// URL"))
    }
}

impl TryFrom<String> for HttpEndpoint {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        raw.parse()
    }
}

impl From<HttpEndpoint> for String {
    fn from(endpoint: HttpEndpoint) -> String {
        endpoint.0.into()
    }
}

impl fmt::Display for HttpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_with_a_host_are_endpoints() {
        assert!("https://s3.eu-west-1.amazonaws.com"
            .parse::<HttpEndpoint>()
            .is_ok());
        assert!("http://127.0.0.1:9000/devstoreaccount1"
            .parse::<HttpEndpoint>()
            .is_ok());
        for bad in ["ftp://host", "s3.amazonaws.com", "http://", "file:///tmp"] {
            assert!(bad.parse::<HttpEndpoint>().is_err(), "{bad}");
        }
    }
}
