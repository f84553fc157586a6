//! Small validated value types shared by events and commands.
//!
//! The newtypes ([`Country`], [`Language`], [`Currency`]) validate and normalise once, in
//! `parse`, and deserialise through the same function (`#[serde(try_from = "String")]`), so a
//! value that exists in memory is always well formed, whether it came from an API request or
//! from a years-old event on the stream.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a value could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("`{0}` is not an ISO 3166-1 alpha-2 country code")]
    Country(String),
    #[error("`{0}` is not a BCP 47 language tag (like `es` or `pt-BR`)")]
    Language(String),
    #[error("`{0}` is not an ISO 4217 currency code (three letters, like `EUR`)")]
    Currency(String),
}

/// Generates the string plumbing every validated newtype shares: `as_str`, `Display`,
/// `FromStr`, `TryFrom<String>`, `TryFrom<&str>` and `From<Self> for String`.
macro_rules! string_newtype_impls {
    ($name:ident) => {
        impl $name {
            /// The normalised text.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = ValueError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValueError;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = ValueError;

            fn try_from(value: &str) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

/// An ISO 3166-1 alpha-2 country code, always uppercase (`ES`, `DE`, `US`).
///
/// Parsing accepts any letter case (web forms send `es`) and checks the code against the list
/// of officially assigned codes, so that routing and per-country metrics never split one
/// country into two spellings or count a typo as a country.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Country(String);

impl Country {
    /// Parses and normalises a country code.
    ///
    /// # Errors
    /// [`ValueError::Country`] unless the text is an assigned ISO 3166-1 alpha-2 code.
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        let upper = text.to_ascii_uppercase();
        if upper.len() == 2 && ISO_3166_ALPHA2.binary_search(&upper.as_str()).is_ok() {
            Ok(Self(upper))
        } else {
            Err(ValueError::Country(text.to_owned()))
        }
    }

    /// Every code [`Country::parse`] accepts, sorted.
    #[must_use]
    pub fn all_codes() -> &'static [&'static str] {
        ISO_3166_ALPHA2
    }
}

string_newtype_impls!(Country);

/// The officially assigned ISO 3166-1 alpha-2 codes, plus `XK` (Kosovo), a user-assigned code
/// that the European Commission and most registries use and that trials do recruit in.
/// Sorted, for binary search.
const ISO_3166_ALPHA2: &[&str] = &[
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "XK", "YE", "YT", "ZA", "ZM", "ZW",
];

/// A BCP 47 language tag, in the subset the funnel needs: a 2–3 letter primary language
/// subtag, optionally followed by script, region or variant subtags (`es`, `pt-BR`,
/// `zh-Hant-TW`).
///
/// Agents are routed by language, so the tag is normalised to BCP 47's conventional casing
/// (language lowercase, script titlecase, region uppercase) to make `PT-br` and `pt-BR` one key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Language(String);

impl Language {
    /// Longest tag accepted; real tags used for routing are far shorter.
    const MAX_LEN: usize = 35;

    /// Parses and normalises a language tag.
    ///
    /// # Errors
    /// [`ValueError::Language`] if the text is not a well-formed tag.
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        let invalid = || ValueError::Language(text.to_owned());
        if text.is_empty() || text.len() > Self::MAX_LEN {
            return Err(invalid());
        }
        let mut subtags = text.split('-');
        let primary = subtags.next().ok_or_else(invalid)?;
        if !(2..=3).contains(&primary.len()) || !primary.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(invalid());
        }
        let mut normalised = primary.to_ascii_lowercase();
        for subtag in subtags {
            if subtag.is_empty()
                || subtag.len() > 8
                || !subtag.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                return Err(invalid());
            }
            normalised.push('-');
            let alphabetic = subtag.bytes().all(|b| b.is_ascii_alphabetic());
            match subtag.len() {
                // Region (`BR`).
                2 if alphabetic => normalised.push_str(&subtag.to_ascii_uppercase()),
                // Script (`Hant`).
                4 if alphabetic => {
                    let lower = subtag.to_ascii_lowercase();
                    let (first, rest) = lower.split_at(1);
                    normalised.push_str(&first.to_ascii_uppercase());
                    normalised.push_str(rest);
                }
                _ => normalised.push_str(&subtag.to_ascii_lowercase()),
            }
        }
        Ok(Self(normalised))
    }

    /// The primary language subtag (`pt` for `pt-BR`).
    #[must_use]
    pub fn primary(&self) -> &str {
        self.0.split('-').next().unwrap_or(&self.0)
    }
}

string_newtype_impls!(Language);

/// An ISO 4217 currency code, always three uppercase letters (`EUR`, `USD`).
///
/// Only the shape is checked: currency lists change more often than this crate does, and a
/// spend figure in an unknown but well-formed currency is still worth keeping.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(String);

impl Currency {
    /// Parses and normalises a currency code.
    ///
    /// # Errors
    /// [`ValueError::Currency`] unless the text is three ASCII letters.
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        if text.len() == 3 && text.bytes().all(|b| b.is_ascii_alphabetic()) {
            Ok(Self(text.to_ascii_uppercase()))
        } else {
            Err(ValueError::Currency(text.to_owned()))
        }
    }
}

string_newtype_impls!(Currency);

/// Whether a string looks like an IANA time zone name (`Europe/Madrid`, `UTC`, `Etc/GMT+5`).
///
/// The domain carries no time zone database (that would be I/O-shaped data that changes several
/// times a year), so this only rejects what can never be a zone name: empty or blank text,
/// spaces, empty path segments. The scheduler that resolves the zone does the real check.
#[must_use]
pub fn is_plausible_time_zone(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_uppercase())
        && name.split('/').all(|segment| !segment.is_empty())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+'))
}

/// Where a referral came from: the channel of the campaign that produced it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceChannel {
    Newsletter,
    Ads,
    Portal,
    Advocacy,
    Physician,
    Other,
}

impl SourceChannel {
    /// Every channel, for exhaustive reports and tests.
    pub const ALL: [Self; 6] = [
        Self::Newsletter,
        Self::Ads,
        Self::Portal,
        Self::Advocacy,
        Self::Physician,
        Self::Other,
    ];

    /// The stable wire name (`newsletter`, `ads`, ...).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Newsletter => "newsletter",
            Self::Ads => "ads",
            Self::Portal => "portal",
            Self::Advocacy => "advocacy",
            Self::Physician => "physician",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for SourceChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the Enrollment Support Team tried to reach a candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactChannel {
    Phone,
    Sms,
    Email,
    Whatsapp,
}

impl ContactChannel {
    /// Every channel, for exhaustive reports and tests.
    pub const ALL: [Self; 4] = [Self::Phone, Self::Sms, Self::Email, Self::Whatsapp];
}

/// What came of one contact attempt. Only [`ContactOutcome::Reached`] counts as contact; every
/// other outcome advances the contact cadence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactOutcome {
    Reached,
    NoAnswer,
    Voicemail,
    Busy,
    WrongNumber,
}

impl ContactOutcome {
    /// Every outcome, for exhaustive reports and tests.
    pub const ALL: [Self; 5] = [
        Self::Reached,
        Self::NoAnswer,
        Self::Voicemail,
        Self::Busy,
        Self::WrongNumber,
    ];

    /// Whether the candidate was actually spoken to.
    #[must_use]
    pub const fn is_reached(self) -> bool {
        matches!(self, Self::Reached)
    }
}

/// A study's service levels for the Enrollment Support Team. Work queues derive due times
/// from these; the journey itself does not enforce them (timers live outside the domain).
///
/// Every field has a default, so a study created without explicit SLAs (or an event written
/// before a field existed) gets the house standard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct SlaSettings {
    /// Hours from referral to the first contact attempt.
    pub first_contact_hours: u32,
    /// Attempts in the contact cadence before a candidate is marked unreachable.
    pub contact_attempts: u32,
    /// Minimum hours between two attempts of the cadence.
    pub attempt_spacing_hours: u32,
    /// Days a site may sit on a referral before it is escalated.
    pub site_escalation_days: u32,
}

impl Default for SlaSettings {
    fn default() -> Self {
        Self {
            first_contact_hours: 24,
            contact_attempts: 5,
            attempt_spacing_hours: 24,
            site_escalation_days: 5,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn country_list_is_sorted_and_complete() {
        assert!(ISO_3166_ALPHA2.windows(2).all(|w| w[0] < w[1]));
        // 249 assigned codes plus XK.
        assert_eq!(ISO_3166_ALPHA2.len(), 250);
    }

    #[test]
    fn country_normalises_case_and_rejects_unknown_codes() {
        assert_eq!(Country::parse("es").unwrap().as_str(), "ES");
        assert_eq!(Country::parse("De").unwrap().as_str(), "DE");
        for bad in ["", "E", "ESP", "ZZ", "E1", "UK", " ES"] {
            assert_eq!(
                Country::parse(bad),
                Err(ValueError::Country(bad.to_owned())),
                "{bad}"
            );
        }
    }

    #[test]
    fn country_deserialises_through_validation() {
        let country: Country = serde_json::from_str("\"fr\"").unwrap();
        assert_eq!(country.as_str(), "FR");
        assert_eq!(serde_json::to_string(&country).unwrap(), "\"FR\"");
        assert!(serde_json::from_str::<Country>("\"XX\"").is_err());
    }

    #[test]
    fn language_normalises_subtag_case() {
        for (input, expected) in [
            ("es", "es"),
            ("EN", "en"),
            ("pt-br", "pt-BR"),
            ("zh-hant-tw", "zh-Hant-TW"),
            ("es-419", "es-419"),
            ("ast", "ast"),
        ] {
            assert_eq!(
                Language::parse(input).unwrap().as_str(),
                expected,
                "{input}"
            );
        }
        assert_eq!(Language::parse("pt-BR").unwrap().primary(), "pt");
    }

    #[test]
    fn language_rejects_malformed_tags() {
        for bad in [
            "",
            "e",
            "english",
            "es_ES",
            "es-",
            "-es",
            "es--ES",
            "es-toolongsubtag",
            "1a",
        ] {
            assert!(Language::parse(bad).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<Language>("\"es_ES\"").is_err());
    }

    #[test]
    fn currency_is_three_letters() {
        assert_eq!(Currency::parse("eur").unwrap().as_str(), "EUR");
        for bad in ["", "EU", "EURO", "E1R"] {
            assert!(Currency::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn plausible_time_zones() {
        for ok in [
            "UTC",
            "Europe/Madrid",
            "America/Argentina/Buenos_Aires",
            "Etc/GMT+5",
        ] {
            assert!(is_plausible_time_zone(ok), "{ok}");
        }
        for bad in [
            "",
            " ",
            "europe/madrid",
            "Europe//Madrid",
            "Europe/",
            "Europe/Ma drid",
        ] {
            assert!(!is_plausible_time_zone(bad), "{bad}");
        }
    }

    #[test]
    fn sla_defaults_fill_missing_fields() {
        let sla: SlaSettings = serde_json::from_str(r#"{"contact_attempts": 3}"#).unwrap();
        assert_eq!(
            sla,
            SlaSettings {
                contact_attempts: 3,
                ..SlaSettings::default()
            }
        );
    }

    #[test]
    fn channels_use_snake_case_wire_names() {
        assert_eq!(
            serde_json::to_string(&ContactOutcome::WrongNumber).unwrap(),
            "\"wrong_number\""
        );
        for channel in SourceChannel::ALL {
            assert_eq!(
                serde_json::to_string(&channel).unwrap(),
                format!("\"{}\"", channel.as_str())
            );
        }
    }
}
