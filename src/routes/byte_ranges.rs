//! Range requests on the local store's downloads (RFC 9110 §14, §13.1.5): which part
//! of an object a GET is answered with, given its `Range` and `If-Range` headers.
//!
//! A request for more than one range is answered with the whole object (200), as
//! RFC 9110 §14.2 allows a server to ignore `Range`: multipart/byteranges answers are
//! rarely wanted by devices resuming a download, and one range is all a resume needs.

use std::time::{Duration, SystemTime};

use actix_web::http::header::{self, EntityTag, HeaderMap, HttpDate, IfRange};

/// What identifies the current content of an object, for `ETag`, `Last-Modified`
/// and `If-Range`.
#[derive(Debug, Clone, Default)]
pub struct Validators {
    /// `"<sha256 hex>"`, a strong validator: it changes exactly when the bytes do.
    pub etag: Option<EntityTag>,
    /// The last write, to the second (the resolution of an HTTP date).
    pub last_modified: Option<HttpDate>,
}

impl Validators {
    /// Validators of an object with this recorded digest and modification time.
    pub fn new(sha256: Option<&valet_backends::Sha256>, modified: Option<SystemTime>) -> Self {
        Self {
            etag: sha256.map(|digest| EntityTag::new_strong(digest.to_hex())),
            last_modified: modified.map(whole_seconds).map(HttpDate::from),
        }
    }

    /// Whether an `If-Range` validator matches the object. An entity tag must match
    /// strongly. A date must equal `Last-Modified`: the bytes under a downloadable
    /// key never change (see `LocalBackend::open`), so its modification date is as
    /// strong a validator as its entity tag.
    fn match_if_range(&self, condition: &IfRange) -> bool {
        match condition {
            IfRange::EntityTag(tag) => self.etag.as_ref().is_some_and(|etag| etag.strong_eq(tag)),
            IfRange::Date(date) => self.last_modified.as_ref() == Some(date),
        }
    }
}

fn whole_seconds(time: SystemTime) -> SystemTime {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(since) => SystemTime::UNIX_EPOCH + Duration::from_secs(since.as_secs()),
        Err(_) => time,
    }
}

/// The part of an object a GET is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// The whole object: 200.
    Whole,
    /// The bytes `first..=last` (both within the object): 206.
    Part {
        /// Offset of the first byte.
        first: u64,
        /// Offset of the last byte, inclusive.
        last: u64,
    },
    /// The range selects no byte of the object: 416.
    Unsatisfiable,
    /// More than one range was asked for: 416 (one range per request is served).
    MultipleRanges,
}

impl Selection {
    /// Evaluates `Range` and `If-Range` (RFC 9110 §13.2.2 step 5) for a GET of an
    /// object of `size` bytes. `Range` is ignored (the whole object) when it is
    /// absent, repeated, syntactically invalid or names another unit, and when
    /// `If-Range` is present but does not match; more than one range is refused.
    pub fn of_request(headers: &HeaderMap, size: u64, validators: &Validators) -> Self {
        let mut ranges = headers.get_all(header::RANGE);
        let (Some(range), None) = (ranges.next(), ranges.next()) else {
            return Selection::Whole;
        };
        if headers.contains_key(header::IF_RANGE) {
            // One If-Range field holding an entity tag or a date; anything else can
            // never match, so the range is ignored.
            let mut conditions = headers.get_all(header::IF_RANGE);
            let condition = match (conditions.next(), conditions.next()) {
                (Some(value), None) => parse_if_range(value),
                _ => None,
            };
            if !condition.is_some_and(|c| validators.match_if_range(&c)) {
                return Selection::Whole;
            }
        }
        let Ok(range) = range.to_str() else {
            return Selection::Whole;
        };
        Self::of_range(range, size)
    }

    /// What one `Range` value asks of an object of `size` bytes.
    fn of_range(range: &str, size: u64) -> Self {
        let Ok(parsed) = http_range_header::parse_range_header(range) else {
            return Selection::Whole;
        };
        if parsed.len() != 1 {
            // RFC 9110 §14.2 lets a server reject a set of ranges; valet serves one
            // range per request rather than multipart/byteranges answers.
            return Selection::MultipleRanges;
        }
        match parsed.validate(size) {
            Ok(ranges) => match ranges.first() {
                Some(range) => Selection::Part {
                    first: *range.start(),
                    last: *range.end(),
                },
                // Only an empty object with a suffix range: all of it is nothing.
                None => Selection::Whole,
            },
            Err(http_range_header::RangeUnsatisfiableError::Unsatisfiable) => {
                Selection::Unsatisfiable
            }
            // Ranges refused for their shape (not possible with one range today):
            // ignoring them is allowed.
            Err(_) => Selection::Whole,
        }
    }
}

fn parse_if_range(value: &header::HeaderValue) -> Option<IfRange> {
    let value = value.to_str().ok()?;
    if let Ok(tag) = value.parse::<EntityTag>() {
        return Some(IfRange::EntityTag(tag));
    }
    value.parse::<HttpDate>().ok().map(IfRange::Date)
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;

    const SIZE: u64 = 100;

    fn validators() -> Validators {
        Validators::new(
            Some(&valet_backends::Sha256::digest(b"object")),
            Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_250)),
        )
    }

    fn select(headers: &[(HeaderName, &str)]) -> Selection {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        Selection::of_request(&map, SIZE, &validators())
    }

    fn part(first: u64, last: u64) -> Selection {
        Selection::Part { first, last }
    }

    #[test]
    fn each_single_range_form_selects_its_bytes() {
        assert_eq!(select(&[(header::RANGE, "bytes=0-9")]), part(0, 9));
        assert_eq!(select(&[(header::RANGE, "bytes=90-")]), part(90, 99));
        assert_eq!(select(&[(header::RANGE, "bytes=-5")]), part(95, 99));
        // An end past the object is cut to it; a suffix longer than it is all of it.
        assert_eq!(select(&[(header::RANGE, "bytes=50-500")]), part(50, 99));
        assert_eq!(select(&[(header::RANGE, "bytes=-500")]), part(0, 99));
        assert_eq!(select(&[(header::RANGE, "bytes=99-99")]), part(99, 99));
    }

    #[test]
    fn ranges_outside_the_object_are_unsatisfiable() {
        for range in ["bytes=100-", "bytes=100-200", "bytes=-0", "bytes=1000-1000"] {
            assert_eq!(
                select(&[(header::RANGE, range)]),
                Selection::Unsatisfiable,
                "{range}"
            );
        }
    }

    #[test]
    fn invalid_or_repeated_ranges_are_ignored() {
        for range in [
            "bytes=5-3",
            "bytes=abc",
            "bytes=",
            "items=0-9",
            "0-9",
            "bytes=0-9 ",
            "bytes=0-1,x",
        ] {
            assert_eq!(
                select(&[(header::RANGE, range)]),
                Selection::Whole,
                "{range}"
            );
        }
        assert_eq!(
            select(&[(header::RANGE, "bytes=0-1"), (header::RANGE, "bytes=0-1")]),
            Selection::Whole
        );
        assert_eq!(select(&[]), Selection::Whole);
        assert_eq!(
            select(&[(header::RANGE, "bytes=0-1,5-6")]),
            Selection::MultipleRanges
        );
    }

    #[test]
    fn if_range_serves_the_range_only_for_the_current_validator() {
        let current = validators();
        let etag = current.etag.clone().unwrap().to_string();
        let date = current.last_modified.unwrap().to_string();
        let with_if_range = |condition: &str| {
            select(&[(header::RANGE, "bytes=0-9"), (header::IF_RANGE, condition)])
        };
        assert_eq!(with_if_range(&etag), part(0, 9));
        assert_eq!(with_if_range(&date), part(0, 9));
        for stale in [
            format!("\"{}\"", valet_backends::Sha256::digest(b"other").to_hex()),
            format!("W/{etag}"),
            "Tue, 14 Nov 2023 22:13:21 GMT".to_owned(),
            "not a validator".to_owned(),
        ] {
            assert_eq!(with_if_range(&stale), Selection::Whole, "{stale}");
        }
        // A mismatching If-Range wins over an unsatisfiable range: the whole object.
        assert_eq!(
            select(&[(header::RANGE, "bytes=500-"), (header::IF_RANGE, "\"old\"")]),
            Selection::Whole
        );
        // Without a digest there is no entity tag to match.
        let undigested = Validators::new(None, None);
        let mut map = HeaderMap::new();
        map.insert(header::RANGE, HeaderValue::from_static("bytes=0-9"));
        map.insert(header::IF_RANGE, HeaderValue::from_str(&etag).unwrap());
        assert_eq!(
            Selection::of_request(&map, SIZE, &undigested),
            Selection::Whole
        );
    }

    #[test]
    fn an_empty_object_has_no_range_but_a_suffix_of_all_of_it() {
        let map = |range: &'static str| {
            let mut map = HeaderMap::new();
            map.insert(header::RANGE, HeaderValue::from_static(range));
            map
        };
        let none = Validators::default();
        assert_eq!(
            Selection::of_request(&map("bytes=0-"), 0, &none),
            Selection::Unsatisfiable
        );
        assert_eq!(
            Selection::of_request(&map("bytes=-5"), 0, &none),
            Selection::Whole
        );
    }
}
