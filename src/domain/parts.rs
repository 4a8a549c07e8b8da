//! How a large file is cut into parts: the part size chosen at creation, and the
//! length every part must have.

use valet_backends::{MultipartLimits, UploadId};

/// A file uploaded in parts: its part size and the store's handle on the upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartPlan {
    /// Length of every part but the last.
    pub part_size: u64,
    /// The store's multipart upload.
    pub upload_id: UploadId,
}

const MIB: u64 = 1024 * 1024;

impl PartPlan {
    /// How many parts a file of `size` bytes has.
    pub fn part_count(&self, size: u64) -> u64 {
        size.div_ceil(self.part_size)
    }

    /// The exact length of part `number` (from 1) of a file of `size` bytes.
    pub fn part_len(&self, number: u64, size: u64) -> u64 {
        let start = (number - 1) * self.part_size;
        self.part_size.min(size.saturating_sub(start))
    }
}

/// Why a requested part size cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartSizeError {
    /// Outside the store's bounds.
    #[error("part_size must be between {min} and {max} bytes for this storage backend")]
    OutOfBounds {
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// Would need more parts than the store allows.
    #[error("part_size {part_size} would need {parts} parts; this storage backend allows at most {max_parts}")]
    TooManyParts {
        /// The size asked for.
        part_size: u64,
        /// Parts it would take.
        parts: u64,
        /// The store's limit.
        max_parts: u64,
    },
}

/// The part size for a file of `size` bytes: `requested` when given (checked
/// against the store's bounds), else `default`, raised to the smallest whole MiB
/// that fits the store's part count limit.
pub fn choose_part_size(
    size: u64,
    requested: Option<u64>,
    default: u64,
    limits: &MultipartLimits,
) -> Result<u64, PartSizeError> {
    let bounds = PartSizeError::OutOfBounds {
        min: limits.min_part_size,
        max: limits.max_part_size,
    };
    if let Some(part_size) = requested {
        // A part size at least the whole file makes one part: the last part may
        // be smaller than the store's minimum.
        if part_size > limits.max_part_size
            || (part_size < limits.min_part_size && part_size < size)
        {
            return Err(bounds);
        }
        let parts = size.div_ceil(part_size);
        if parts > limits.max_parts {
            return Err(PartSizeError::TooManyParts {
                part_size,
                parts,
                max_parts: limits.max_parts,
            });
        }
        return Ok(part_size);
    }
    let needed = size.div_ceil(limits.max_parts).div_ceil(MIB) * MIB;
    let part_size = default.max(needed).max(limits.min_part_size);
    if part_size > limits.max_part_size {
        return Err(bounds);
    }
    Ok(part_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S3: MultipartLimits = MultipartLimits {
        min_part_size: 5 * MIB,
        max_part_size: 5 * 1024 * MIB,
        max_parts: 10_000,
    };

    #[test]
    fn parts_have_the_part_size_but_the_last() {
        let plan = PartPlan {
            part_size: 5,
            upload_id: UploadId::new("u"),
        };
        assert_eq!(plan.part_count(12), 3);
        assert_eq!(
            (1..=3).map(|n| plan.part_len(n, 12)).collect::<Vec<_>>(),
            [5, 5, 2]
        );
        assert_eq!(plan.part_count(10), 2);
        assert_eq!(plan.part_len(2, 10), 5);
    }

    #[test]
    fn the_default_is_raised_to_the_smallest_whole_mib_that_fits() {
        assert_eq!(
            choose_part_size(100 * MIB, None, 16 * MIB, &S3),
            Ok(16 * MIB)
        );
        // 1 TiB in 10,000 parts needs 104.9 MiB: 105 MiB.
        let tib = 1024 * 1024 * MIB;
        assert_eq!(choose_part_size(tib, None, 16 * MIB, &S3), Ok(105 * MIB));
        assert!(tib.div_ceil(105 * MIB) <= 10_000);
    }

    #[test]
    fn requested_sizes_are_checked_against_the_store() {
        assert_eq!(
            choose_part_size(100 * MIB, Some(5 * MIB), 16 * MIB, &S3),
            Ok(5 * MIB)
        );
        assert!(matches!(
            choose_part_size(100 * MIB, Some(MIB), 16 * MIB, &S3),
            Err(PartSizeError::OutOfBounds { .. })
        ));
        assert!(matches!(
            choose_part_size(100 * MIB, Some(6 * 1024 * MIB), 16 * MIB, &S3),
            Err(PartSizeError::OutOfBounds { .. })
        ));
        assert!(matches!(
            choose_part_size(60_000 * MIB, Some(5 * MIB), 16 * MIB, &S3),
            Err(PartSizeError::TooManyParts { .. })
        ));
        // One part smaller than the minimum is the whole (small) file.
        assert_eq!(
            choose_part_size(MIB, Some(2 * MIB), 16 * MIB, &S3),
            Ok(2 * MIB)
        );
    }
}
