//! The fixed material the plan draws from: countries (languages spoken, time zone, calling
//! code, cities), therapeutic areas, and name pools for the invented patients.
//!
//! The names are invented test data; the simulator still treats them as personal data and
//! never logs them, so that its logs look like production logs.

/// A country trials recruit in.
#[derive(Debug)]
pub(crate) struct CountryInfo {
    /// ISO 3166-1 alpha-2.
    pub(crate) code: &'static str,
    /// Languages patients ask to be called in, with their share.
    pub(crate) languages: &'static [(&'static str, f64)],
    pub(crate) time_zone: &'static str,
    pub(crate) calling_code: &'static str,
    pub(crate) cities: &'static [&'static str],
    /// Share of trial sites worldwide, roughly: the US and western Europe host most.
    pub(crate) weight: f64,
}

pub(crate) const COUNTRIES: &[CountryInfo] = &[
    CountryInfo {
        code: "US",
        languages: &[("en", 0.8), ("es", 0.2)],
        time_zone: "America/New_York",
        calling_code: "1",
        cities: &[
            "Boston", "Houston", "Chicago", "Seattle", "Atlanta", "Denver",
        ],
        weight: 6.0,
    },
    CountryInfo {
        code: "CA",
        languages: &[("en", 0.75), ("fr", 0.25)],
        time_zone: "America/Toronto",
        calling_code: "1",
        cities: &["Toronto", "Montreal", "Vancouver"],
        weight: 1.5,
    },
    CountryInfo {
        code: "MX",
        languages: &[("es", 1.0)],
        time_zone: "America/Mexico_City",
        calling_code: "52",
        cities: &["Guadalajara", "Monterrey", "Puebla"],
        weight: 1.0,
    },
    CountryInfo {
        code: "BR",
        languages: &[("pt-BR", 1.0)],
        time_zone: "America/Sao_Paulo",
        calling_code: "55",
        cities: &["Sao Paulo", "Porto Alegre", "Curitiba", "Recife"],
        weight: 1.5,
    },
    CountryInfo {
        code: "AR",
        languages: &[("es", 1.0)],
        time_zone: "America/Argentina/Buenos_Aires",
        calling_code: "54",
        cities: &["Buenos Aires", "Cordoba", "Rosario"],
        weight: 1.0,
    },
    CountryInfo {
        code: "ES",
        languages: &[("es", 0.9), ("ca", 0.1)],
        time_zone: "Europe/Madrid",
        calling_code: "34",
        cities: &["Madrid", "Barcelona", "Valencia", "Sevilla"],
        weight: 2.0,
    },
    CountryInfo {
        code: "DE",
        languages: &[("de", 0.95), ("tr", 0.05)],
        time_zone: "Europe/Berlin",
        calling_code: "49",
        cities: &["Berlin", "Munich", "Hamburg", "Leipzig", "Cologne"],
        weight: 2.5,
    },
    CountryInfo {
        code: "FR",
        languages: &[("fr", 1.0)],
        time_zone: "Europe/Paris",
        calling_code: "33",
        cities: &["Paris", "Lyon", "Marseille", "Lille"],
        weight: 2.0,
    },
    CountryInfo {
        code: "IT",
        languages: &[("it", 1.0)],
        time_zone: "Europe/Rome",
        calling_code: "39",
        cities: &["Milan", "Rome", "Bologna", "Naples"],
        weight: 1.8,
    },
    CountryInfo {
        code: "GB",
        languages: &[("en", 1.0)],
        time_zone: "Europe/London",
        calling_code: "44",
        cities: &["London", "Manchester", "Leeds", "Glasgow"],
        weight: 2.0,
    },
    CountryInfo {
        code: "NL",
        languages: &[("nl", 1.0)],
        time_zone: "Europe/Amsterdam",
        calling_code: "31",
        cities: &["Amsterdam", "Rotterdam", "Utrecht"],
        weight: 1.0,
    },
    CountryInfo {
        code: "BE",
        languages: &[("nl", 0.6), ("fr", 0.4)],
        time_zone: "Europe/Brussels",
        calling_code: "32",
        cities: &["Brussels", "Antwerp", "Ghent", "Liege"],
        weight: 1.0,
    },
    CountryInfo {
        code: "PL",
        languages: &[("pl", 1.0)],
        time_zone: "Europe/Warsaw",
        calling_code: "48",
        cities: &["Warsaw", "Krakow", "Gdansk", "Lodz"],
        weight: 1.5,
    },
    CountryInfo {
        code: "CZ",
        languages: &[("cs", 1.0)],
        time_zone: "Europe/Prague",
        calling_code: "420",
        cities: &["Prague", "Brno"],
        weight: 0.8,
    },
    CountryInfo {
        code: "HU",
        languages: &[("hu", 1.0)],
        time_zone: "Europe/Budapest",
        calling_code: "36",
        cities: &["Budapest", "Debrecen"],
        weight: 0.8,
    },
    CountryInfo {
        code: "RO",
        languages: &[("ro", 1.0)],
        time_zone: "Europe/Bucharest",
        calling_code: "40",
        cities: &["Bucharest", "Cluj-Napoca", "Iasi"],
        weight: 0.7,
    },
    CountryInfo {
        code: "SE",
        languages: &[("sv", 1.0)],
        time_zone: "Europe/Stockholm",
        calling_code: "46",
        cities: &["Stockholm", "Gothenburg", "Uppsala"],
        weight: 0.7,
    },
    CountryInfo {
        code: "PT",
        languages: &[("pt", 1.0)],
        time_zone: "Europe/Lisbon",
        calling_code: "351",
        cities: &["Lisbon", "Porto", "Coimbra"],
        weight: 0.6,
    },
    CountryInfo {
        code: "GR",
        languages: &[("el", 1.0)],
        time_zone: "Europe/Athens",
        calling_code: "30",
        cities: &["Athens", "Thessaloniki"],
        weight: 0.5,
    },
    CountryInfo {
        code: "TR",
        languages: &[("tr", 1.0)],
        time_zone: "Europe/Istanbul",
        calling_code: "90",
        cities: &["Istanbul", "Ankara", "Izmir"],
        weight: 0.7,
    },
    CountryInfo {
        code: "IL",
        languages: &[("he", 0.8), ("ar", 0.2)],
        time_zone: "Asia/Jerusalem",
        calling_code: "972",
        cities: &["Tel Aviv", "Haifa", "Jerusalem"],
        weight: 0.6,
    },
    CountryInfo {
        code: "JP",
        languages: &[("ja", 1.0)],
        time_zone: "Asia/Tokyo",
        calling_code: "81",
        cities: &["Tokyo", "Osaka", "Nagoya", "Fukuoka"],
        weight: 1.5,
    },
    CountryInfo {
        code: "KR",
        languages: &[("ko", 1.0)],
        time_zone: "Asia/Seoul",
        calling_code: "82",
        cities: &["Seoul", "Busan", "Incheon"],
        weight: 1.0,
    },
    CountryInfo {
        code: "AU",
        languages: &[("en", 1.0)],
        time_zone: "Australia/Sydney",
        calling_code: "61",
        cities: &["Sydney", "Melbourne", "Brisbane", "Perth"],
        weight: 1.0,
    },
    CountryInfo {
        code: "ZA",
        languages: &[("en", 0.7), ("af", 0.3)],
        time_zone: "Africa/Johannesburg",
        calling_code: "27",
        cities: &["Johannesburg", "Cape Town", "Durban"],
        weight: 0.6,
    },
    CountryInfo {
        code: "CH",
        languages: &[("de", 0.65), ("fr", 0.25), ("it", 0.1)],
        time_zone: "Europe/Zurich",
        calling_code: "41",
        cities: &["Zurich", "Geneva", "Basel", "Lugano"],
        weight: 0.7,
    },
];

/// A therapeutic area: what the study treats, and how hard its protocol screening is.
#[derive(Debug)]
pub(crate) struct Area {
    pub(crate) title: &'static str,
    pub(crate) code: &'static str,
    /// Share of screened patients failing the protocol's criteria (the brief: 30–80% by area).
    pub(crate) screen_fail: f64,
}

pub(crate) const AREAS: &[Area] = &[
    Area {
        title: "Migraine prevention",
        code: "MIG",
        screen_fail: 0.35,
    },
    Area {
        title: "Moderate-to-severe atopic dermatitis",
        code: "ATD",
        screen_fail: 0.40,
    },
    Area {
        title: "Type 2 diabetes with obesity",
        code: "T2D",
        screen_fail: 0.45,
    },
    Area {
        title: "Plaque psoriasis",
        code: "PSO",
        screen_fail: 0.38,
    },
    Area {
        title: "Heart failure with preserved ejection fraction",
        code: "HFP",
        screen_fail: 0.55,
    },
    Area {
        title: "Rheumatoid arthritis",
        code: "RHA",
        screen_fail: 0.50,
    },
    Area {
        title: "Major depressive disorder",
        code: "MDD",
        screen_fail: 0.60,
    },
    Area {
        title: "Non-small-cell lung cancer",
        code: "LUN",
        screen_fail: 0.70,
    },
    Area {
        title: "Early Alzheimer's disease",
        code: "ALZ",
        screen_fail: 0.78,
    },
];

/// What a site calls itself, by language (the first two letters of the site's language).
pub(crate) fn site_kinds(language: &str) -> &'static [&'static str] {
    match language.get(..2).unwrap_or("en") {
        "es" | "ca" => &[
            "Hospital Universitario",
            "Centro de Investigacion Clinica",
            "Clinica",
        ],
        "de" => &["Universitatsklinikum", "Studienzentrum", "Klinikum"],
        "fr" => &["CHU", "Centre de Recherche Clinique", "Hopital"],
        "it" => &["Ospedale", "Policlinico", "Centro di Ricerca Clinica"],
        "pt" => &["Hospital", "Centro de Pesquisa Clinica", "Clinica"],
        "nl" => &[
            "Ziekenhuis",
            "Universitair Medisch Centrum",
            "Onderzoekscentrum",
        ],
        "pl" => &["Szpital", "Centrum Badan Klinicznych"],
        _ => &[
            "University Hospital",
            "Clinical Research Center",
            "Medical Center",
        ],
    }
}

pub(crate) const FIRST_NAMES: &[&str] = &[
    "Ana", "Lucas", "Maria", "Jonas", "Sofia", "Mateo", "Emma", "Noah", "Julia", "Leon", "Ines",
    "Marco", "Hana", "Yuki", "Min-jun", "Olivia", "Liam", "Chloe", "Tomasz", "Eva", "Pieter",
    "Elena", "Ahmet", "Noa", "Camille", "Giulia", "Joao", "Anna", "David", "Sara",
];

pub(crate) const LAST_NAMES: &[&str] = &[
    "Garcia",
    "Muller",
    "Rossi",
    "Martin",
    "Silva",
    "Kowalski",
    "Nagy",
    "Novak",
    "Jansen",
    "Dubois",
    "Smith",
    "Johnson",
    "Tanaka",
    "Kim",
    "Yilmaz",
    "Cohen",
    "Popescu",
    "Andersson",
    "Santos",
    "Papadopoulos",
    "Brown",
    "Lopez",
    "Schmidt",
    "Bianchi",
    "Peeters",
    "Costa",
];

/// Campaign names by channel, so the sources report reads like a real one.
pub(crate) fn campaign_names(channel: &str) -> &'static [&'static str] {
    match channel {
        "newsletter" => &["Patient newsletter", "Condition e-mail digest"],
        "ads" => &["Search ads", "Social media ads", "Video ads"],
        "portal" => &["Trial-finder portal", "Registry portal"],
        "advocacy" => &["Patient advocacy partnership", "Support-group outreach"],
        _ => &["Physician referral network", "GP outreach"],
    }
}
