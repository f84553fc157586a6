//! The pure, seeded part of the simulation: the world (studies, sites, campaigns) and what
//! happens to each referral, in simulated time. No I/O, no clock: the same settings give the
//! same plan, and the driver only performs it.
//!
//! # How the brief's ranges map to the plan
//!
//! Every probability below is the *realistic* one; [`boosted`] raises the odds of each
//! forward step by [`PlanSettings::boost`] (1 = realistic), because a realistic 0.4–2%
//! referral-to-randomized rate leaves a one-minute demo with a handful of randomized patients.
//!
//! * pre-screen pass 25–50%: a study's base rate is drawn in 27–40%, scaled by channel
//!   (ads 0.85 … physician 1.25, run on the phone at the first reached call);
//! * contact success 60–90%: each country's chance to reach the candidate per attempt is drawn
//!   in 19–30%, over the study's cadence of 5 attempts a day apart, with 2% wrong numbers;
//! * no-show 20–35%: a study's base in 22–30%, each site within ±4 points, clamped to 20–35%;
//! * screen failure 30–80% by area (the area table in `catalog`);
//! * 10–50% of sites randomize 0–1: 10% of sites never act on a referral (half of their
//!   candidates are reallocated after the escalation time), 20% are slow, and referrals spread
//!   over sites by a skewed (log-normal) capacity. That holds for the brief's busier trials
//!   (25k referrals, ~100 sites); in a quieter one most sites randomize 0–1, as in the
//!   industry figure (half of all sites);
//! * referral → randomized 0.4–2% comes out of the product (checked by the tests).

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use funnel_domain::SourceChannel;

use crate::catalog::{
    AREAS, COUNTRIES, CountryInfo, FIRST_NAMES, LAST_NAMES, campaign_names, site_kinds,
};
use crate::rng::Rng;

const HOUR: f64 = 3_600.0;
const DAY: f64 = 86_400.0;

/// Streams of the generator, so that one part of the plan never shifts another.
const STREAM_WORLD: u64 = 1;
const STREAM_REFERRAL: u64 = 2;
const STREAM_CONTACT: u64 = 3;
const STREAM_DUPLICATE: u64 = 4;
const STREAM_ARRIVAL: u64 = 5;

/// Share of referrals that are the same person referred again (the service links them).
const DUPLICATE_RATE: f64 = 0.015;
/// A duplicate repeats a referral at least this many places earlier, so that even at full speed
/// the first one has been posted before the second arrives.
const DUPLICATE_MIN_GAP: u64 = 500;
const DUPLICATE_MAX_GAP: u64 = 1_000;

/// What the plan is built from.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanSettings {
    pub seed: u64,
    pub studies: usize,
    /// Sites per study, drawn per study (the brief: 100–200).
    pub sites_per_study: (usize, usize),
    /// Countries per study, at most the sites and the 26 the catalogue knows (the brief: 10–26).
    pub countries_per_study: (usize, usize),
    /// Referrals per simulated day, all studies together; `None`: all arrive at once.
    pub referrals_per_day: Option<f64>,
    /// Odds multiplier of every forward step (1 = the brief's realistic rates).
    pub boost: f64,
}

impl Default for PlanSettings {
    fn default() -> Self {
        Self {
            seed: 1,
            studies: 3,
            sites_per_study: (100, 200),
            countries_per_study: (10, 26),
            referrals_per_day: Some(500.0),
            boost: 1.0,
        }
    }
}

/// How quickly a site acts on the candidates referred to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Responsiveness {
    /// About a day.
    Fast,
    /// A few days.
    Normal,
    /// More than a week; some of its candidates are reallocated.
    Slow,
    /// Never acts: its candidates wait until the team reallocates them, or for ever.
    Never,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SitePlan {
    pub name: String,
    pub country: &'static str,
    pub languages: Vec<&'static str>,
    /// Randomized patients per month the site committed to.
    pub monthly_target: f64,
    pub responsiveness: Responsiveness,
    /// Relative share of the country's referrals it receives.
    pub capacity: f64,
    /// The Enrollment Support Team books this site's appointments on the first call.
    pub books_via_agents: bool,
    pub no_show: f64,
    pub consent: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CampaignPlan {
    pub name: String,
    pub channel: SourceChannel,
    /// Relative share of the study's referrals.
    pub weight: f64,
    /// What one referral costs, in the study currency's minor unit.
    pub cost_per_referral_minor: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StudyPlan {
    pub title: String,
    pub protocol_code: String,
    pub target_randomized: u32,
    /// Sponsor number (studies share sponsors).
    pub sponsor: usize,
    pub currency: &'static str,
    pub countries: Vec<&'static str>,
    pub languages: Vec<&'static str>,
    pub sites: Vec<SitePlan>,
    pub campaigns: Vec<CampaignPlan>,
    /// The study's contact cadence (its SLA's `contact_attempts`).
    pub contact_attempts: u32,
    /// Relative share of all referrals.
    pub weight: f64,
    pub prescreen_pass: f64,
    pub screen_fail: f64,
    /// Per country of `countries`: the chance to reach a candidate on one attempt.
    pub reach: Vec<f64>,
}

impl StudyPlan {
    fn sites_in(&self, country: &str) -> impl Iterator<Item = (usize, &SitePlan)> + Clone {
        self.sites
            .iter()
            .enumerate()
            .filter(move |(_, site)| site.country == country)
    }
}

/// A candidate's invented contact data. Personal data by the service's rules: `Debug` and
/// `Display` never show it, and nothing logs it.
#[derive(Clone, PartialEq, Eq)]
pub struct Contact {
    pub name: String,
    pub phone: String,
    pub email: String,
}

impl fmt::Debug for Contact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Contact(<redacted>)")
    }
}

/// Who records a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Actor {
    /// The Enrollment Support Team.
    Agent,
    /// The staff of the site (index into the study's sites) the candidate is at.
    Site(usize),
}

/// What came of one call by the team.
#[derive(Clone, Debug, PartialEq)]
pub enum CallOutcome {
    /// Not reached; the last attempt of the cadence also marks the journey unreachable.
    NoAnswer { ends_cadence: bool },
    /// A wrong number ends the cadence at once.
    WrongNumber,
    /// Reached; on the same call the pre-screen may be run, the candidate referred to a site
    /// and an appointment booked (`appointment_in` after the call).
    Reached {
        prescreen: Option<bool>,
        refer_to: Option<usize>,
        appointment_in: Option<Duration>,
    },
}

/// One step of a journey, as the API records it.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Call(CallOutcome),
    NotInterested {
        reason: &'static str,
    },
    OptedOut,
    Disqualified {
        reason: &'static str,
    },
    Reallocate {
        to_site: usize,
        reason: &'static str,
    },
    SiteContacted,
    Schedule {
        appointment_in: Duration,
    },
    Reschedule {
        appointment_in: Duration,
    },
    Attended,
    NoShow,
    Consented,
    ScreeningStarted,
    ScreenFailed {
        reason: &'static str,
    },
    Randomized {
        arm: &'static str,
    },
    Withdrawn {
        reason: &'static str,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// Simulated time since the referral.
    pub after: Duration,
    pub actor: Actor,
    pub action: Action,
}

/// Everything that happens to one referral.
#[derive(Clone, Debug, PartialEq)]
pub struct ReferralPlan {
    pub index: u64,
    pub study: usize,
    pub campaign: usize,
    pub country: &'static str,
    pub language: &'static str,
    pub time_zone: &'static str,
    pub preferred_site: Option<usize>,
    pub consent_to_contact: bool,
    /// The online pre-screen's result, sent with the referral (physician referrals have none:
    /// the team runs it on the phone).
    pub online_prescreen: Option<bool>,
    /// Simulated time since the start of the simulation.
    pub arrival: Duration,
    /// The earlier referral of the same person (the service links this one as a duplicate;
    /// it has no steps).
    pub duplicate_of: Option<u64>,
    pub contact: Contact,
    pub steps: Vec<Step>,
}

/// The simulated world and the rule that plans each referral.
#[derive(Clone, Debug)]
pub struct World {
    settings: PlanSettings,
    pub studies: Vec<StudyPlan>,
    /// Cumulative arrival intensity over the hours of a week, in referrals.
    week: Vec<f64>,
}

/// Raises the odds `p / (1 - p)` by `boost`: forward steps get likelier, and a probability
/// stays a probability.
#[must_use]
pub fn boosted(probability: f64, boost: f64) -> f64 {
    let p = probability.clamp(0.0, 1.0);
    if p >= 1.0 || boost <= 0.0 {
        return p;
    }
    let odds = p / (1.0 - p) * boost;
    odds / (1.0 + odds)
}

fn secs(seconds: f64) -> Duration {
    Duration::from_secs_f64(seconds.max(0.0))
}

impl World {
    /// Builds the world from the settings alone.
    #[must_use]
    pub fn new(settings: PlanSettings) -> Self {
        let mut rng = Rng::derive(settings.seed, STREAM_WORLD, 0);
        let mut areas: Vec<usize> = (0..AREAS.len()).collect();
        shuffle(&mut rng, &mut areas);
        let studies = (0..settings.studies)
            .map(|index| {
                let area = areas[index % areas.len()];
                build_study(&mut rng, &settings, index, area)
            })
            .collect();
        Self {
            week: week_intensity(settings.referrals_per_day.unwrap_or(0.0)),
            settings,
            studies,
        }
    }

    #[must_use]
    pub const fn settings(&self) -> &PlanSettings {
        &self.settings
    }

    /// When referral `index` arrives, in simulated time: the inverse of the cumulative
    /// intensity (busier on weekday daytimes), so arrivals come in order and with shape.
    #[must_use]
    pub fn arrival(&self, index: u64) -> Duration {
        let per_week = self.week.last().copied().unwrap_or(0.0);
        if per_week <= 0.0 {
            return Duration::ZERO;
        }
        let mut rng = Rng::derive(self.settings.seed, STREAM_ARRIVAL, index);
        #[allow(
            clippy::cast_precision_loss,
            reason = "referral counts stay far below 2^52"
        )]
        let target = index as f64 + rng.unit();
        let weeks = (target / per_week).floor();
        let rest = target - weeks * per_week;
        // `week[h]` is the cumulative count at the end of hour h.
        let hour = self.week.partition_point(|cumulative| *cumulative <= rest);
        let before = if hour == 0 { 0.0 } else { self.week[hour - 1] };
        let in_hour = self.week.get(hour).map_or(0.0, |end| end - before);
        let fraction = if in_hour > 0.0 {
            (rest - before) / in_hour
        } else {
            0.0
        };
        #[allow(clippy::cast_precision_loss, reason = "an hour index below 168")]
        let hours = hour as f64 + fraction;
        secs(weeks * 7.0 * DAY + hours * HOUR)
    }

    /// The plan of referral `index`: a pure function of the settings and the index.
    #[must_use]
    pub fn referral(&self, index: u64) -> ReferralPlan {
        if let Some(primary) = self.duplicate_target(index) {
            let mut root = primary;
            while let Some(earlier) = self.duplicate_target(root) {
                root = earlier;
            }
            let original = self.fresh_referral(root);
            let mut rng = Rng::derive(self.settings.seed, STREAM_REFERRAL, index);
            let study = &self.studies[original.study];
            let campaign = rng
                .weighted(study.campaigns.iter().map(|c| c.weight))
                .unwrap_or(0);
            return ReferralPlan {
                index,
                campaign,
                online_prescreen: None,
                arrival: self.arrival(index),
                duplicate_of: Some(root),
                preferred_site: None,
                steps: Vec::new(),
                ..original
            };
        }
        self.fresh_referral(index)
    }

    fn duplicate_target(&self, index: u64) -> Option<u64> {
        if index < DUPLICATE_MAX_GAP {
            return None;
        }
        let mut rng = Rng::derive(self.settings.seed, STREAM_DUPLICATE, index);
        if !rng.chance(DUPLICATE_RATE) {
            return None;
        }
        let gap = rng.between(
            usize::try_from(DUPLICATE_MIN_GAP).unwrap_or(usize::MAX),
            usize::try_from(DUPLICATE_MAX_GAP).unwrap_or(usize::MAX),
        );
        Some(index - u64::try_from(gap).unwrap_or(DUPLICATE_MIN_GAP))
    }

    fn fresh_referral(&self, index: u64) -> ReferralPlan {
        let boost = self.settings.boost;
        let mut rng = Rng::derive(self.settings.seed, STREAM_REFERRAL, index);
        let study_index = rng
            .weighted(self.studies.iter().map(|s| s.weight))
            .unwrap_or(0);
        let study = &self.studies[study_index];
        let campaign = rng
            .weighted(study.campaigns.iter().map(|c| c.weight))
            .unwrap_or(0);
        let channel = study
            .campaigns
            .get(campaign)
            .map_or(SourceChannel::Other, |c| c.channel);
        let country_weights: Vec<f64> = study
            .countries
            .iter()
            .map(|country| study.sites_in(country).map(|(_, site)| site.capacity).sum())
            .collect();
        let country_index = rng.weighted(country_weights).unwrap_or(0);
        let country = study.countries.get(country_index).copied().unwrap_or("US");
        let info = country_info(country);
        // Only languages some site of the country speaks: a study offers what its sites do.
        let offered: BTreeSet<&'static str> = study
            .sites_in(country)
            .flat_map(|(_, site)| site.languages.iter().copied())
            .collect();
        let languages: Vec<(&'static str, f64)> = info
            .map(|info| info.languages)
            .unwrap_or(&[])
            .iter()
            .filter(|(language, _)| offered.contains(language))
            .copied()
            .collect();
        let language = rng
            .weighted(languages.iter().map(|(_, share)| *share))
            .and_then(|i| languages.get(i))
            .map_or("en", |(language, _)| *language);
        let time_zone = info.map_or("UTC", |info| info.time_zone);
        let preferred_site = if rng.chance(0.2) {
            choose_site(&mut rng, study, country, language, None)
        } else {
            None
        };
        let consent_to_contact = rng.chance(0.96);
        let pass = boosted(study.prescreen_pass * channel_factor(channel), boost);
        let online_prescreen = (channel != SourceChannel::Physician).then(|| rng.chance(pass));
        let reach = study.reach.get(country_index).copied().unwrap_or(0.25);
        let mut journey = JourneyBuilder {
            rng: &mut rng,
            study,
            boost,
            country,
            language,
            steps: Vec::new(),
        };
        if consent_to_contact && online_prescreen != Some(false) {
            let phone_pass = (channel == SourceChannel::Physician).then_some(pass);
            journey.contact_phase(reach, phone_pass, preferred_site);
        }
        let steps = journey.steps;
        ReferralPlan {
            index,
            study: study_index,
            campaign,
            country,
            language,
            time_zone,
            preferred_site,
            consent_to_contact,
            online_prescreen,
            arrival: self.arrival(index),
            duplicate_of: None,
            contact: self.contact(index, country),
            steps,
        }
    }

    fn contact(&self, index: u64, country: &str) -> Contact {
        let mut rng = Rng::derive(self.settings.seed, STREAM_CONTACT, index);
        let first = rng.pick(FIRST_NAMES).copied().unwrap_or("Alex");
        let last = rng.pick(LAST_NAMES).copied().unwrap_or("Doe");
        let calling_code = country_info(country).map_or("1", |info| info.calling_code);
        // Unique per referral within a run, so only planned duplicates look like one person.
        let number = 100_000_000 + (rng.next_u64() % 800_000_000);
        Contact {
            name: format!("{first} {last}"),
            phone: format!("+{calling_code} {number}"),
            email: format!(
                "{}.{}.{index}@example.org",
                first.to_ascii_lowercase(),
                last.to_ascii_lowercase()
            ),
        }
    }
}

fn country_info(code: &str) -> Option<&'static CountryInfo> {
    COUNTRIES.iter().find(|info| info.code == code)
}

fn channel_factor(channel: SourceChannel) -> f64 {
    match channel {
        SourceChannel::Ads => 0.85,
        SourceChannel::Newsletter | SourceChannel::Other => 1.0,
        SourceChannel::Portal => 1.05,
        SourceChannel::Advocacy => 1.1,
        SourceChannel::Physician => 1.25,
    }
}

fn shuffle<T>(rng: &mut Rng, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i + 1);
        items.swap(i, j);
    }
}

/// Referrals arrive mostly on weekday daytimes (ads and newsletters are read then), fewer at
/// night and on weekends. Returns the cumulative count at the end of each hour of a week.
fn week_intensity(per_day: f64) -> Vec<f64> {
    let hour_weight = |hour: usize| match hour {
        0..=6 => 0.25,
        7..=8 | 22..=23 => 0.7,
        9..=12 => 1.6,
        13..=17 => 1.35,
        _ => 1.15,
    };
    let day_weight = |day: usize| match day {
        5 => 0.6,
        6 => 0.45,
        _ => 1.0,
    };
    let raw: Vec<f64> = (0..168)
        .map(|h| day_weight(h / 24) * hour_weight(h % 24))
        .collect();
    let total: f64 = raw.iter().sum();
    let scale = per_day * 7.0 / total;
    raw.iter()
        .scan(0.0, |sum, weight| {
            *sum += weight * scale;
            Some(*sum)
        })
        .collect()
}

fn build_study(rng: &mut Rng, settings: &PlanSettings, index: usize, area: usize) -> StudyPlan {
    let area = &AREAS[area];
    let (low, high) = settings.sites_per_study;
    let site_count = rng.between(low.max(1), high.max(low.max(1)));
    let (c_low, c_high) = settings.countries_per_study;
    let country_count = rng
        .between(c_low.max(1), c_high.max(c_low.max(1)))
        .min(site_count)
        .min(COUNTRIES.len());
    // Countries without replacement, weighted by how many sites they usually host.
    let mut pool: Vec<&CountryInfo> = COUNTRIES.iter().collect();
    let mut countries: Vec<&CountryInfo> = Vec::new();
    while countries.len() < country_count {
        let Some(pick) = rng.weighted(pool.iter().map(|c| c.weight)) else {
            break;
        };
        countries.push(pool.remove(pick));
    }
    let mut per_country: Vec<usize> = vec![1; countries.len()];
    for _ in countries.len()..site_count {
        if let Some(pick) = rng.weighted(countries.iter().map(|c| c.weight)) {
            per_country[pick] += 1;
        }
    }
    let study_no_show = rng.uniform(0.22, 0.30);
    let mut names = BTreeSet::new();
    let mut sites = Vec::with_capacity(site_count);
    for (info, count) in countries.iter().zip(&per_country) {
        for _ in 0..*count {
            sites.push(build_site(rng, info, study_no_show, &mut names));
        }
    }
    let languages: BTreeSet<&'static str> = sites
        .iter()
        .flat_map(|site| site.languages.iter().copied())
        .collect();
    let channels = [
        (SourceChannel::Ads, 0.35, (6_000, 12_000)),
        (SourceChannel::Newsletter, 0.2, (1_500, 4_000)),
        (SourceChannel::Portal, 0.2, (1_000, 3_000)),
        (SourceChannel::Advocacy, 0.1, (2_000, 5_000)),
        (SourceChannel::Physician, 0.15, (8_000, 15_000)),
    ];
    let campaigns = channels
        .iter()
        .map(|(channel, weight, (cost_low, cost_high))| {
            let name = rng
                .pick(campaign_names(channel.as_str()))
                .copied()
                .unwrap_or("Campaign");
            CampaignPlan {
                name: format!("{name} ({})", area.code),
                channel: *channel,
                weight: weight * rng.uniform(0.7, 1.3),
                cost_per_referral_minor: i64::try_from(rng.between(*cost_low, *cost_high))
                    .unwrap_or(5_000),
            }
        })
        .collect();
    let monthly: f64 = sites.iter().map(|site| site.monthly_target).sum();
    let reach = countries.iter().map(|_| rng.uniform(0.19, 0.30)).collect();
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a positive target of at most a few thousand"
    )]
    let target_randomized = (monthly * 12.0).round().max(1.0) as u32;
    #[allow(clippy::cast_precision_loss, reason = "a site count")]
    let weight = site_count as f64 * rng.uniform(0.6, 1.4);
    StudyPlan {
        title: area.title.to_owned(),
        protocol_code: format!("{}-{}", area.code, 200 + rng.below(700)),
        target_randomized,
        sponsor: index % 2,
        currency: if rng.chance(0.5) { "EUR" } else { "USD" },
        countries: countries.iter().map(|c| c.code).collect(),
        languages: languages.into_iter().collect(),
        sites,
        campaigns,
        contact_attempts: 5,
        weight,
        prescreen_pass: rng.uniform(0.27, 0.40),
        screen_fail: (area.screen_fail + rng.uniform(-0.03, 0.03)).clamp(0.3, 0.8),
        reach,
    }
}

fn build_site(
    rng: &mut Rng,
    info: &CountryInfo,
    study_no_show: f64,
    names: &mut BTreeSet<String>,
) -> SitePlan {
    let primary = info
        .languages
        .first()
        .map_or("en", |(language, _)| *language);
    let mut languages = vec![primary];
    for (language, share) in info.languages.iter().skip(1) {
        if *share >= 0.25 || rng.chance(0.5) {
            languages.push(language);
        }
    }
    let city = rng.pick(info.cities).copied().unwrap_or("Central");
    let kind = rng.pick(site_kinds(primary)).copied().unwrap_or("Clinic");
    let base = format!("{kind} {city}");
    let mut name = base.clone();
    let mut n = 2;
    while !names.insert(name.clone()) {
        name = format!("{base} {n}");
        n += 1;
    }
    let responsiveness = match rng.weighted([0.28, 0.42, 0.20, 0.10]) {
        Some(0) => Responsiveness::Fast,
        Some(1) => Responsiveness::Normal,
        Some(2) => Responsiveness::Slow,
        _ => Responsiveness::Never,
    };
    SitePlan {
        name,
        country: info.code,
        languages,
        monthly_target: (rng.uniform(0.1, 0.6) * 10.0).round() / 10.0,
        books_via_agents: responsiveness != Responsiveness::Never && rng.chance(0.35),
        responsiveness,
        capacity: rng.lognormal(1.0, 0.45),
        no_show: (study_no_show + rng.uniform(-0.04, 0.04)).clamp(0.2, 0.35),
        consent: rng.uniform(0.5, 0.7),
    }
}

/// A site in the candidate's country, preferring one that speaks the candidate's language,
/// weighted by capacity; never `except`.
fn choose_site(
    rng: &mut Rng,
    study: &StudyPlan,
    country: &str,
    language: &str,
    except: Option<usize>,
) -> Option<usize> {
    let candidates: Vec<(usize, f64)> = study
        .sites_in(country)
        .filter(|(index, _)| Some(*index) != except)
        .map(|(index, site)| {
            let speaks = site.languages.contains(&language);
            (index, site.capacity * if speaks { 1.0 } else { 0.1 })
        })
        .collect();
    rng.weighted(candidates.iter().map(|(_, weight)| *weight))
        .and_then(|pick| candidates.get(pick))
        .map(|(index, _)| *index)
}

/// Builds one journey's steps, carrying the clock (seconds since the referral).
struct JourneyBuilder<'a> {
    rng: &'a mut Rng,
    study: &'a StudyPlan,
    boost: f64,
    country: &'static str,
    language: &'static str,
    steps: Vec<Step>,
}

impl JourneyBuilder<'_> {
    fn push(&mut self, at: f64, actor: Actor, action: Action) {
        self.steps.push(Step {
            after: secs(at),
            actor,
            action,
        });
    }

    fn chance(&mut self, probability: f64) -> bool {
        self.rng.chance(boosted(probability, self.boost))
    }

    /// The team's contact cadence and what the reached call decides.
    fn contact_phase(
        &mut self,
        reach: f64,
        phone_prescreen: Option<f64>,
        preferred: Option<usize>,
    ) {
        let reach = boosted(reach, self.boost);
        let attempts = self.study.contact_attempts.max(1);
        // The first call: hours after the referral (the SLA is 24 h), a long tail of slow days.
        let mut t = self
            .rng
            .lognormal(5.0 * HOUR, 0.9)
            .clamp(0.2 * HOUR, 72.0 * HOUR);
        let mut reached = false;
        for attempt in 1..=attempts {
            let draw = self.rng.unit();
            if draw < 0.02 {
                self.push(t, Actor::Agent, Action::Call(CallOutcome::WrongNumber));
                return;
            }
            if draw < 0.02 + reach {
                reached = true;
                break;
            }
            let ends_cadence = attempt == attempts;
            self.push(
                t,
                Actor::Agent,
                Action::Call(CallOutcome::NoAnswer { ends_cadence }),
            );
            if ends_cadence {
                return;
            }
            t += DAY + self.rng.uniform(0.0, 8.0 * HOUR);
        }
        if !reached {
            return;
        }
        let prescreen = phone_prescreen.map(|pass| self.rng.chance(pass));
        let reached_only = |prescreen| {
            Action::Call(CallOutcome::Reached {
                prescreen,
                refer_to: None,
                appointment_in: None,
            })
        };
        if prescreen == Some(false) {
            self.push(t, Actor::Agent, reached_only(prescreen));
            return;
        }
        // On the call: interest, the team's own eligibility questions, or a site referral.
        if !self.chance(0.40) {
            self.push(t, Actor::Agent, reached_only(prescreen));
            let follow_up = match self.rng.weighted([0.55, 0.10, 0.35]) {
                Some(0) => Action::NotInterested {
                    reason: "not interested in a trial",
                },
                Some(1) => Action::OptedOut,
                _ => Action::Disqualified {
                    reason: "excluded by medical history",
                },
            };
            self.push(t + 120.0, Actor::Agent, follow_up);
            return;
        }
        let site = preferred
            .filter(|site| {
                self.study
                    .sites
                    .get(*site)
                    .is_some_and(|s| s.country == self.country)
            })
            .or_else(|| choose_site(self.rng, self.study, self.country, self.language, None));
        let Some(site) = site else {
            self.push(t, Actor::Agent, reached_only(prescreen));
            return;
        };
        let books = self
            .study
            .sites
            .get(site)
            .is_some_and(|s| s.books_via_agents);
        let appointment_in = books.then(|| secs(self.rng.uniform(3.0, 14.0) * DAY));
        self.push(
            t,
            Actor::Agent,
            Action::Call(CallOutcome::Reached {
                prescreen,
                refer_to: Some(site),
                appointment_in,
            }),
        );
        match appointment_in {
            Some(wait) => self.appointment_phase(t + wait.as_secs_f64(), site, 0),
            None => self.site_phase(t + 60.0, site, 0),
        }
    }

    /// The candidate waits at `site` from `t`: the site acts (or not), books, the candidate
    /// comes (or not).
    fn site_phase(&mut self, t: f64, site: usize, reallocations: u32) {
        let Some(plan) = self.study.sites.get(site) else {
            return;
        };
        let escalation = 5.0 * DAY + self.rng.uniform(0.0, 2.0 * DAY);
        let delay = match plan.responsiveness {
            Responsiveness::Fast => Some(self.rng.lognormal(0.8 * DAY, 0.6)),
            Responsiveness::Normal => Some(self.rng.lognormal(2.5 * DAY, 0.6)),
            Responsiveness::Slow => Some(self.rng.lognormal(7.0 * DAY, 0.6)),
            Responsiveness::Never => None,
        };
        // A site that sits on the referral past its escalation: the team may move the candidate.
        let stalls = delay.is_none_or(|delay| delay > escalation + 2.0 * DAY);
        if stalls && reallocations < 2 && self.rng.chance(0.5) {
            let to = choose_site(
                self.rng,
                self.study,
                self.country,
                self.language,
                Some(site),
            );
            if let Some(to) = to {
                self.push(
                    t + escalation,
                    Actor::Agent,
                    Action::Reallocate {
                        to_site: to,
                        reason: "site has not acted on the referral",
                    },
                );
                self.site_phase(t + escalation + 60.0, to, reallocations + 1);
                return;
            }
        }
        let Some(delay) = delay else {
            return;
        };
        let t = t + delay;
        self.push(t, Actor::Site(site), Action::SiteContacted);
        let t = t + self.rng.uniform(0.0, 1.5 * DAY);
        if !self.chance(0.35) {
            let action = if self.rng.chance(0.5) {
                Action::Disqualified {
                    reason: "not eligible on site review",
                }
            } else {
                Action::NotInterested {
                    reason: "declined the site visit",
                }
            };
            self.push(t, Actor::Agent, action);
            return;
        }
        let wait = self.rng.uniform(3.0, 14.0) * DAY;
        self.push(
            t,
            Actor::Site(site),
            Action::Schedule {
                appointment_in: secs(wait),
            },
        );
        self.appointment_phase(t + wait, site, 0);
    }

    /// The appointment at `appointment`, and what follows it.
    fn appointment_phase(&mut self, appointment: f64, site: usize, no_shows: u32) {
        let Some(plan) = self.study.sites.get(site) else {
            return;
        };
        if !self.chance(1.0 - plan.no_show) {
            let t = appointment + self.rng.uniform(2.0 * HOUR, 20.0 * HOUR);
            self.push(t, Actor::Site(site), Action::NoShow);
            if no_shows >= 1 {
                return;
            }
            let t = t + self.rng.uniform(1.0, 3.0) * DAY;
            let draw = self.rng.unit();
            let reached = Action::Call(CallOutcome::Reached {
                prescreen: None,
                refer_to: None,
                appointment_in: None,
            });
            if draw < boosted(0.55, self.boost) {
                let wait = self.rng.uniform(3.0, 10.0) * DAY;
                self.push(t, Actor::Agent, reached);
                self.push(
                    t + 60.0,
                    Actor::Agent,
                    Action::Reschedule {
                        appointment_in: secs(wait),
                    },
                );
                self.appointment_phase(t + 60.0 + wait, site, no_shows + 1);
            } else if draw < 0.8 {
                self.push(t, Actor::Agent, reached);
                self.push(
                    t + 60.0,
                    Actor::Agent,
                    Action::NotInterested {
                        reason: "no longer interested after missing the visit",
                    },
                );
            }
            return;
        }
        let t = appointment + self.rng.uniform(1.0 * HOUR, 6.0 * HOUR);
        self.push(t, Actor::Site(site), Action::Attended);
        let t = t + self.rng.uniform(0.0, 3.0 * DAY);
        if !self.chance(plan.consent) {
            self.push(
                t,
                Actor::Site(site),
                Action::Withdrawn {
                    reason: "declined consent",
                },
            );
            return;
        }
        self.push(t, Actor::Site(site), Action::Consented);
        let t = t + self.rng.uniform(0.0, 2.0 * DAY);
        self.push(t, Actor::Site(site), Action::ScreeningStarted);
        let t = t + self.rng.uniform(7.0, 28.0) * DAY;
        if !self.chance(1.0 - self.study.screen_fail) {
            let reason = if self.rng.chance(0.5) {
                "inclusion criteria not met"
            } else {
                "exclusion criterion: laboratory values"
            };
            self.push(t, Actor::Site(site), Action::ScreenFailed { reason });
            return;
        }
        let arm = if self.rng.chance(0.5) { "A" } else { "B" };
        self.push(t, Actor::Site(site), Action::Randomized { arm });
        if self.rng.chance(0.04) {
            let t = t + self.rng.uniform(14.0, 90.0) * DAY;
            self.push(
                t,
                Actor::Site(site),
                Action::Withdrawn {
                    reason: "withdrew consent",
                },
            );
        }
    }
}

#[cfg(test)]
mod tests;
