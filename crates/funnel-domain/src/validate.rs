//! Field checks shared by both aggregates' `decide`.

use crate::error::DomainError;
use crate::values::is_plausible_time_zone;

/// Refuses blank free text: a reason nobody can read is worse than none.
pub(crate) fn require_text(field: &str, value: &str) -> Result<(), DomainError> {
    if value.trim().is_empty() {
        Err(DomainError::invalid(format!("{field} must not be blank")))
    } else {
        Ok(())
    }
}

/// Like [`require_text`], for optional text: absent is fine, blank is not.
pub(crate) fn require_optional_text(field: &str, value: Option<&str>) -> Result<(), DomainError> {
    value.map_or(Ok(()), |value| require_text(field, value))
}

pub(crate) fn require_time_zone(time_zone: &str) -> Result<(), DomainError> {
    if is_plausible_time_zone(time_zone) {
        Ok(())
    } else {
        Err(DomainError::invalid(format!(
            "`{time_zone}` is not an IANA time zone name"
        )))
    }
}

/// Refuses an empty list or one that names the same value twice.
pub(crate) fn require_unique_non_empty<T: PartialEq>(
    field: &str,
    values: &[T],
) -> Result<(), DomainError> {
    if values.is_empty() {
        return Err(DomainError::invalid(format!("{field} must not be empty")));
    }
    let has_duplicate = values
        .iter()
        .enumerate()
        .any(|(index, value)| values[..index].contains(value));
    if has_duplicate {
        return Err(DomainError::invalid(format!(
            "{field} must not contain duplicates"
        )));
    }
    Ok(())
}
