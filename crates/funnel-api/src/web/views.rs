//! The pages' HTML. maud escapes every interpolated value, so text from the read models or the
//! stream (study titles, site names, event fields) can never become markup.
//!
//! Figures carry `data-metric` (what it is, as the API names it) and `data-value` (the API's
//! raw number) so that tests, and anyone scraping a page, compare them with the API exactly,
//! whatever the display rounding.

use std::fmt::Display;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use funnel_domain::SourceChannel;
use funnel_projections::dashboard::{
    AttributionFigures, ForecastStatus, Money, Percentiles, SiteRow, StudySummary, TargetForecast,
};
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use super::StudyFigures;
use super::charts;
use crate::auth::{Principal, Role};
use crate::routes::queues::{AgentsReport, DepthReport};
use crate::routes::timeline::Timeline;

/// How often the live region is refreshed, in milliseconds (read by `live.js`).
const REFRESH_MS: u32 = 5_000;

// ---------------------------------------------------------------------------------------------
// Layout.

/// The frame of every page: skip link, header with navigation and sign-out, `main` with the
/// title, an optional part that stays put (forms), and the live region (refreshed in place).
fn layout(
    title: &str,
    principal: Option<&Principal>,
    fixed: Option<Markup>,
    at: Option<DateTime<Utc>>,
    live: &Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · funnel" }
                link rel="stylesheet" href="/ui/assets/app.css";
                script src="/ui/assets/live.js" defer {}
            }
            body {
                a.skip-link href="#main" { "Skip to main content" }
                header.site-header {
                    p.brand { a href="/ui/" { "funnel" } " recruitment dashboard" }
                    @if let Some(principal) = principal {
                        nav aria-label="Main" {
                            ul {
                                @if matches!(principal.role, Role::Admin | Role::Sponsor | Role::Site) {
                                    li { a href="/ui/" { "Studies" } }
                                }
                                @if principal.role == Role::Admin {
                                    li { a href="/ui/queues" { "Work queues" } }
                                }
                            }
                        }
                        form.sign-out method="post" action="/ui/sign-out" {
                            span { "Signed in as " strong { (principal.role) } }
                            " "
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    @if let Some(fixed) = fixed { (fixed) }
                    @if principal.is_some() {
                        p.live-controls {
                            button #live-toggle type="button" aria-pressed="false" hidden {
                                "Pause live updates"
                            }
                        }
                    }
                    // Outside the live region: the stamp changes on every refresh, and a screen
                    // reader should hear about figures that changed, not about the clock.
                    @if let Some(at) = at { (as_of(at)) }
                    div #live aria-live="polite" data-refresh=(REFRESH_MS) {
                        (live)
                    }
                }
            }
        }
    }
}

fn as_of(at: DateTime<Utc>) -> Markup {
    html! {
        p.as-of #as-of {
            "Figures as of "
            time datetime=(at.to_rfc3339()) { (at.format("%Y-%m-%d %H:%M:%S UTC")) }
            "."
        }
    }
}

pub(super) fn error_page(status: StatusCode, detail: &str) -> Markup {
    let title = match status {
        StatusCode::FORBIDDEN => "You do not have access to this page",
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => "The request is not valid",
        StatusCode::TOO_MANY_REQUESTS => "Too many requests",
        StatusCode::SERVICE_UNAVAILABLE => "Not available right now",
        _ => "Something went wrong",
    };
    layout(
        title,
        None,
        None,
        None,
        &html! {
            div.notice role="alert" {
                p { (detail) }
                p { "Status " (status.as_u16()) ". " a href="/ui/" { "Back to your studies" } }
            }
        },
    )
}

pub(super) fn sign_in(error: Option<&str>) -> Markup {
    let form = html! {
        @if let Some(error) = error {
            div.notice role="alert" #sign-in-error { p { (error) } }
        }
        form.sign-in method="post" action="/ui/sign-in" {
            div.field {
                label for="token" { "API token" }
                p.hint #token-hint {
                    "Paste the token you were given (it starts with " code { "fnl_" } "). "
                    "You see what the token may see; signing in keeps you in for 8 hours."
                }
                input #token name="token" type="password" required autocomplete="off"
                    spellcheck="false" aria-describedby="token-hint"
                    aria-invalid=(if error.is_some() { "true" } else { "false" });
            }
            button type="submit" { "Sign in" }
        }
    };
    layout("Sign in", None, Some(form), None, &html! {})
}

// ---------------------------------------------------------------------------------------------
// Formatting.

fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_owned(), |value| format!("{:.1}%", value * 100.0))
}

fn decimal(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "–".to_owned(), |value| format!("{value:.digits$}"))
}

fn raw(value: Option<impl Display>) -> String {
    value.map_or_else(String::new, |value| value.to_string())
}

fn money(amounts: &[Money]) -> String {
    if amounts.is_empty() {
        return "–".to_owned();
    }
    amounts
        .iter()
        .map(|money| {
            let sign = if money.amount_minor < 0 { "-" } else { "" };
            let minor = money.amount_minor.unsigned_abs();
            format!(
                "{} {sign}{}.{:02}",
                money.currency,
                minor / 100,
                minor % 100
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Money as `data-value`: `EUR:60000`, several joined by `;`.
fn money_value(amounts: &[Money]) -> String {
    amounts
        .iter()
        .map(|money| format!("{}:{}", money.currency, money.amount_minor))
        .collect::<Vec<_>>()
        .join(";")
}

/// A snake_case wire name as words: `referred_to_site` → `Referred to site`.
fn words(name: &str) -> String {
    let text = name.replace('_', " ");
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// The wire name of one of the read model's enums.
fn wire(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A table cell with a figure and its raw value.
fn cell(metric: &str, value: impl Display, shown: impl Display) -> Markup {
    html! { td.num data-metric=(metric) data-value=(value) { (shown) } }
}

fn count(metric: &str, value: i64) -> Markup {
    cell(metric, value, value)
}

fn rate(metric: &str, value: Option<f64>) -> Markup {
    cell(metric, raw(value), percent(value))
}

// ---------------------------------------------------------------------------------------------
// Study list.

pub(super) fn study_list(principal: &Principal, studies: &[StudySummary]) -> Markup {
    let live = html! {
        @if studies.is_empty() {
            p { "There are no studies for you to see yet." }
        } @else {
            table {
                caption { "Studies you may see (" (studies.len()) ")" }
                thead {
                    tr {
                        th scope="col" { "Study" }
                        th scope="col" { "Protocol" }
                        th scope="col" { "Countries" }
                        th scope="col" class="num" { "Sites" }
                        th scope="col" class="num" { "Target randomized" }
                    }
                }
                tbody {
                    @for study in studies {
                        tr data-study=(study.study_id) {
                            th scope="row" {
                                a href={ "/ui/studies/" (study.study_id) } { (study.title) }
                            }
                            td { (study.protocol_code) }
                            td {
                                (study.countries.iter().map(ToString::to_string)
                                    .collect::<Vec<_>>().join(", "))
                            }
                            (count("sites", i64::try_from(study.site_ids.len()).unwrap_or(i64::MAX)))
                            (count("target_randomized", study.target_randomized))
                        }
                    }
                }
            }
        }
    };
    layout("Studies", Some(principal), None, None, &live)
}

// ---------------------------------------------------------------------------------------------
// Study and site pages.

fn filter_form(figures: &StudyFigures, action: &str, with_site: bool) -> Markup {
    let filter = &figures.filter;
    let chosen_site = filter.site_ids.first().copied();
    let chosen_country = filter.countries.first().map(ToString::to_string);
    let chosen_source = filter.sources.first().copied();
    html! {
        form.filters method="get" action=(action) aria-label="Filters" {
            fieldset {
                legend { "Filter the figures" }
                div.field {
                    label for="from" { "Referred from" }
                    input #from name="from" type="date" value=(raw(filter.from));
                }
                div.field {
                    label for="to" { "Referred to (inclusive)" }
                    input #to name="to" type="date" value=(raw(filter.to));
                }
                @if with_site {
                    div.field {
                        label for="site" { "Site" }
                        select #site name="site" {
                            option value="" { "All sites" }
                            @for (site, name) in &figures.site_options {
                                option value=(site) selected[chosen_site == Some(*site)] {
                                    (name.clone().unwrap_or_else(|| site.to_string()))
                                }
                            }
                        }
                    }
                }
                div.field {
                    label for="country" { "Candidate's country" }
                    select #country name="country" {
                        option value="" { "All countries" }
                        @for country in &figures.summary.countries {
                            @let code = country.to_string();
                            option value=(code) selected[chosen_country.as_deref() == Some(code.as_str())] {
                                (code)
                            }
                        }
                    }
                }
                div.field {
                    label for="source" { "Source channel" }
                    select #source name="source" {
                        option value="" { "All sources" }
                        @for source in SourceChannel::ALL {
                            option value=(source.as_str()) selected[chosen_source == Some(source)] {
                                (words(source.as_str()))
                            }
                        }
                    }
                }
                div.actions {
                    button type="submit" { "Apply filters" }
                    " "
                    a href=(action) { "Clear filters" }
                }
            }
        }
    }
}

fn funnel_section(figures: &StudyFigures) -> Markup {
    let funnel = &figures.funnel;
    let bars: Vec<(String, i64)> = funnel
        .steps
        .iter()
        .map(|step| (words(&wire(&step.stage)), step.journeys))
        .collect();
    html! {
        section aria-labelledby="funnel-heading" {
            h2 #funnel-heading { "Funnel and conversion by stage" }
            (charts::bar_chart("funnel-chart", "Journeys that reached each funnel stage", &bars))
            table #funnel-table {
                caption { "Journeys per funnel stage, and conversion from the stage before" }
                thead {
                    tr {
                        th scope="col" { "Stage" }
                        th scope="col" class="num" { "Journeys" }
                        th scope="col" class="num" { "Conversion from previous stage" }
                    }
                }
                tbody {
                    @for step in &funnel.steps {
                        @let stage = wire(&step.stage);
                        tr data-stage=(stage) {
                            th scope="row" { (words(&stage)) }
                            (count(&stage, step.journeys))
                            (rate(&format!("{stage}_conversion"), step.conversion_from_previous))
                        }
                    }
                }
            }
            table #funnel-rates {
                caption { "Rates" }
                tbody {
                    tr { th scope="row" { "Referral to randomization" } (rate("overall_conversion", funnel.overall_conversion)) }
                    tr { th scope="row" { "Pre-screen pass rate (of " (funnel.prescreened) " pre-screened)" } (rate("prescreen_pass_rate", funnel.prescreen_pass_rate)) }
                    tr { th scope="row" { "Screen-failure rate (of " (funnel.screened) " screened)" } (rate("screen_fail_rate", funnel.screen_fail_rate)) }
                    tr { th scope="row" { "No-show rate (of " (funnel.scheduled) " scheduled)" } (rate("no_show_rate", funnel.no_show_rate)) }
                }
            }
        }
    }
}

fn screenings_section(figures: &StudyFigures) -> Markup {
    let points: Vec<(String, i64)> = figures
        .screenings
        .points
        .iter()
        .map(|point| (point.bucket_start.format("%b %Y").to_string(), point.count))
        .collect();
    html! {
        section aria-labelledby="screenings-heading" {
            h2 #screenings-heading { "Monthly screenings" }
            @if points.is_empty() {
                p { "No screenings in this range yet." }
            } @else {
                (charts::column_chart("screenings-chart", "Screenings started per month", &points))
                table #screenings-table {
                    caption { "Screenings started per month" }
                    thead { tr { th scope="col" { "Month" } th scope="col" class="num" { "Screenings" } } }
                    tbody {
                        @for point in &figures.screenings.points {
                            tr data-bucket=(point.bucket_start) {
                                th scope="row" { (point.bucket_start.format("%B %Y")) }
                                (count("screenings", point.count))
                            }
                        }
                    }
                }
            }
        }
    }
}

fn hours(percentiles: &Percentiles) -> String {
    decimal(percentiles.median, 1)
}

fn site_flags(row: &SiteRow) -> Markup {
    html! {
        @if row.slower_than_study_median {
            span.flag.flag-slow data-flag="slower_than_study_median" { "Slow: slower than the study median" }
            " "
        }
        @if row.zero_or_one_randomized {
            span.flag.flag-low data-flag="zero_or_one_randomized" { "0–1 randomized" }
        }
    }
}

fn leaderboard_section(figures: &StudyFigures) -> Markup {
    let study = figures.summary.study_id;
    html! {
        section aria-labelledby="sites-heading" {
            h2 #sites-heading { "Site leaderboard" }
            p {
                "Study median time from referral to site contact: "
                span data-metric="study_median_hours_to_site_contact"
                    data-value=(raw(figures.sites.study_median_hours_to_site_contact)) {
                    (decimal(figures.sites.study_median_hours_to_site_contact, 1)) " hours"
                }
                ". Flags mark sites slower than that median and sites with 0 or 1 randomized."
            }
            div.table-scroll tabindex="0" role="region" aria-labelledby="sites-heading" {
                table #sites-table {
                    caption { "Sites, most randomized first" }
                    thead {
                        tr {
                            th scope="col" { "Site" }
                            th scope="col" { "Country" }
                            th scope="col" { "Status" }
                            th scope="col" class="num" { "Referrals" }
                            th scope="col" class="num" { "Scheduled" }
                            th scope="col" class="num" { "Randomized" }
                            th scope="col" class="num" { "Conversion" }
                            th scope="col" class="num" { "Median hours to site contact" }
                            th scope="col" class="num" { "Not acted on" }
                            th scope="col" class="num" { "Randomized per month" }
                            th scope="col" class="num" { "Monthly target" }
                            th scope="col" { "Flags" }
                        }
                    }
                    tbody {
                        @for row in leaderboard(&figures.sites.sites) {
                            tr data-site=(row.site_id) {
                                th scope="row" {
                                    a href={ "/ui/studies/" (study) "/sites/" (row.site_id) } {
                                        (row.name.clone().unwrap_or_else(|| row.site_id.to_string()))
                                    }
                                }
                                td { (row.country.clone().unwrap_or_default()) }
                                td { (row.status.clone().unwrap_or_default()) }
                                (count("referrals", row.referrals))
                                (count("scheduled", row.scheduled))
                                (count("randomized", row.randomized))
                                (rate("conversion", row.conversion))
                                (cell("hours_to_site_contact_median", raw(row.hours_to_site_contact.median), hours(&row.hours_to_site_contact)))
                                (count("not_acted_on", row.not_acted_on))
                                (cell("randomized_per_month", raw(row.randomized_per_month), decimal(row.randomized_per_month, 2)))
                                (cell("monthly_target_randomized", raw(row.monthly_target_randomized), decimal(row.monthly_target_randomized, 2)))
                                td { (site_flags(row)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Most randomized first, then most referrals; the API's order breaks ties.
fn leaderboard(rows: &[SiteRow]) -> Vec<&SiteRow> {
    let mut sorted: Vec<&SiteRow> = rows.iter().collect();
    sorted.sort_by(|a, b| {
        b.randomized
            .cmp(&a.randomized)
            .then(b.referrals.cmp(&a.referrals))
    });
    sorted
}

fn attribution_cells(figures: &AttributionFigures) -> Markup {
    html! {
        (count("referrals", figures.referrals))
        (count("randomized", figures.randomized))
        (rate("conversion", figures.conversion))
        (cell("spend", money_value(&figures.spend), money(&figures.spend)))
        (cell("cost_per_referral", money_value(&figures.cost_per_referral), money(&figures.cost_per_referral)))
        (cell("cost_per_randomized", money_value(&figures.cost_per_randomized), money(&figures.cost_per_randomized)))
    }
}

fn attribution_head(first: &str) -> Markup {
    html! {
        thead {
            tr {
                th scope="col" { (first) }
                th scope="col" class="num" { "Referrals" }
                th scope="col" class="num" { "Randomized" }
                th scope="col" class="num" { "Conversion" }
                th scope="col" class="num" { "Spend" }
                th scope="col" class="num" { "Cost per referral" }
                th scope="col" class="num" { "Cost per randomized" }
            }
        }
    }
}

fn sources_section(figures: &StudyFigures) -> Markup {
    let sources = &figures.sources;
    html! {
        section aria-labelledby="sources-heading" {
            h2 #sources-heading { "Source attribution" }
            p { "Spend as recorded per campaign, in its currency; costs are spend divided by referrals or by randomized patients." }
            div.table-scroll tabindex="0" role="region" aria-label="Source attribution by channel" {
                table #channels-table {
                    caption { "By source channel" }
                    (attribution_head("Channel"))
                    tbody {
                        @for channel in &sources.channels {
                            tr data-channel=(channel.channel.as_str()) {
                                th scope="row" { (words(channel.channel.as_str())) }
                                (attribution_cells(&channel.figures))
                            }
                        }
                    }
                }
            }
            div.table-scroll tabindex="0" role="region" aria-label="Source attribution by campaign" {
                table #campaigns-table {
                    caption { "By campaign" }
                    (attribution_head("Campaign"))
                    tbody {
                        @for campaign in &sources.campaigns {
                            tr data-campaign=(campaign.campaign_id) {
                                th scope="row" {
                                    (campaign.name.clone().unwrap_or_else(|| campaign.campaign_id.to_string()))
                                    @if let Some(channel) = campaign.channel {
                                        " (" (words(channel.as_str())) ")"
                                    }
                                }
                                (attribution_cells(&campaign.figures))
                            }
                        }
                    }
                }
            }
        }
    }
}

fn forecast_text(forecast: &TargetForecast) -> String {
    match forecast.status {
        ForecastStatus::Forecast => forecast.forecast_date.map_or_else(
            || "No forecast date.".to_owned(),
            |date| format!("At the rate of the last 90 days the target is reached on {date}."),
        ),
        ForecastStatus::TargetReached => "The target is reached.".to_owned(),
        ForecastStatus::NoRecentRandomizations => {
            "Nobody was randomized in the last 90 days: at that rate the target is never reached."
                .to_owned()
        }
        ForecastStatus::NoReferrals => "No referrals yet, so no rate to forecast from.".to_owned(),
        ForecastStatus::BeyondHorizon => {
            "At the current rate the target lies more than 100 years ahead.".to_owned()
        }
    }
}

fn forecast_section(forecast: Option<&TargetForecast>) -> Markup {
    html! {
        section aria-labelledby="forecast-heading" {
            h2 #forecast-heading { "Target vs forecast" }
            @if let Some(forecast) = forecast {
                p { "Study-wide: the filters above do not apply here." }
                (charts::progress("forecast-chart", "Randomized against the study's target", forecast.randomized, forecast.target_randomized))
                table #forecast-table {
                    caption { "Target and forecast" }
                    tbody {
                        tr { th scope="row" { "Target randomized" } (count("target_randomized", forecast.target_randomized)) }
                        tr { th scope="row" { "Randomized" } (count("randomized", forecast.randomized)) }
                        tr { th scope="row" { "Remaining" } (count("remaining", forecast.remaining)) }
                        tr { th scope="row" { "Randomized in the rate window" } (count("randomized_in_window", forecast.randomized_in_window)) }
                        tr { th scope="row" { "Randomized per day" } (cell("rate_per_day", raw(forecast.rate_per_day), decimal(forecast.rate_per_day, 3))) }
                        tr { th scope="row" { "Forecast date" } (cell("forecast_date", raw(forecast.forecast_date), forecast.forecast_date.map_or_else(|| "–".to_owned(), |date| date.to_string()))) }
                    }
                }
                p data-metric="forecast_status" data-value=(wire(&forecast.status)) { (forecast_text(forecast)) }
            } @else {
                p { "The forecast is study-wide; it is shown to the study's sponsor and administrators." }
            }
        }
    }
}

pub(super) fn study_page(principal: &Principal, figures: &StudyFigures) -> Markup {
    let summary = &figures.summary;
    let action = format!("/ui/studies/{}", summary.study_id);
    let fixed = html! {
        p.subtitle { "Protocol " (summary.protocol_code) " · target " (summary.target_randomized) " randomized" }
        (filter_form(figures, &action, true))
    };
    let live = html! {
        (funnel_section(figures))
        (screenings_section(figures))
        (leaderboard_section(figures))
        (sources_section(figures))
        (forecast_section(figures.forecast.as_ref()))
    };
    layout(
        &summary.title,
        Some(principal),
        Some(fixed),
        Some(figures.at),
        &live,
    )
}

pub(super) fn site_page(principal: &Principal, figures: &StudyFigures, row: &SiteRow) -> Markup {
    let summary = &figures.summary;
    let action = format!("/ui/studies/{}/sites/{}", summary.study_id, row.site_id);
    let name = row.name.clone().unwrap_or_else(|| row.site_id.to_string());
    let fixed = html! {
        p.subtitle {
            "Site of " a href={ "/ui/studies/" (summary.study_id) } { (summary.title) }
            @if let Some(country) = &row.country { " · " (country) }
            @if let Some(status) = &row.status { " · " (status) }
        }
        (filter_form(figures, &action, false))
    };
    let live = html! {
        section aria-labelledby="site-heading" {
            h2 #site-heading { "Speed and targets" }
            p { (site_flags(row)) }
            table #site-table {
                caption { "This site's figures" }
                tbody {
                    tr data-site=(row.site_id) { th scope="row" { "Referrals" } (count("referrals", row.referrals)) }
                    tr { th scope="row" { "Site contacted" } (count("site_contacted", row.site_contacted)) }
                    tr { th scope="row" { "Scheduled" } (count("scheduled", row.scheduled)) }
                    tr { th scope="row" { "Attended" } (count("attended", row.attended)) }
                    tr { th scope="row" { "Consented" } (count("consented", row.consented)) }
                    tr { th scope="row" { "Randomized" } (count("randomized", row.randomized)) }
                    tr { th scope="row" { "Conversion" } (rate("conversion", row.conversion)) }
                    tr { th scope="row" { "Median hours to first contact attempt" } (cell("hours_to_first_contact_attempt_median", raw(row.hours_to_first_contact_attempt.median), hours(&row.hours_to_first_contact_attempt))) }
                    tr { th scope="row" { "Median hours to site contact" } (cell("hours_to_site_contact_median", raw(row.hours_to_site_contact.median), hours(&row.hours_to_site_contact))) }
                    tr { th scope="row" { "Median hours to appointment" } (cell("hours_to_scheduled_median", raw(row.hours_to_scheduled.median), hours(&row.hours_to_scheduled))) }
                    tr { th scope="row" { "Referrals not acted on" } (count("not_acted_on", row.not_acted_on)) }
                    tr { th scope="row" { "Open journeys" } (count("open_journeys", row.open_journeys)) }
                    tr { th scope="row" { "Median days in process" } (cell("median_days_in_process", raw(row.median_days_in_process), decimal(row.median_days_in_process, 1))) }
                    tr { th scope="row" { "Referrals per month" } (cell("referrals_per_month", raw(row.referrals_per_month), decimal(row.referrals_per_month, 2))) }
                    tr { th scope="row" { "Randomized per month" } (cell("randomized_per_month", raw(row.randomized_per_month), decimal(row.randomized_per_month, 2))) }
                    tr { th scope="row" { "Monthly target (randomized)" } (cell("monthly_target_randomized", raw(row.monthly_target_randomized), decimal(row.monthly_target_randomized, 2))) }
                    tr { th scope="row" { "Target attainment" } (rate("target_attainment", row.target_attainment)) }
                }
            }
        }
        (funnel_section(figures))
        (screenings_section(figures))
    };
    layout(&name, Some(principal), Some(fixed), Some(figures.at), &live)
}

// ---------------------------------------------------------------------------------------------
// Team lead.

fn duration(seconds: Option<i64>) -> String {
    seconds.map_or_else(
        || "–".to_owned(),
        |seconds| {
            let (hours, minutes) = (seconds / 3_600, (seconds % 3_600) / 60);
            if hours > 0 {
                format!("{hours} h {minutes} min")
            } else {
                format!("{minutes} min")
            }
        },
    )
}

pub(super) fn queues_page(
    principal: &Principal,
    depth: &DepthReport,
    agents: &AgentsReport,
) -> Markup {
    let total = |pick: fn(&crate::routes::queues::QueueDepth) -> i64| -> i64 {
        depth.queues.iter().map(pick).sum()
    };
    let oldest = depth
        .queues
        .iter()
        .filter_map(|queue| queue.oldest_age_seconds)
        .max();
    let live = html! {
        section aria-labelledby="totals-heading" {
            h2 #totals-heading { "Now" }
            table #queue-totals {
                caption { "Every queue together" }
                tbody {
                    tr { th scope="row" { "Due (claimable, within service level)" } (count("due", total(|q| q.due))) }
                    tr { th scope="row" { "Overdue (past service level)" } (count("overdue", total(|q| q.overdue))) }
                    tr { th scope="row" { "Leased to an agent" } (count("leased", total(|q| q.leased))) }
                    tr { th scope="row" { "Upcoming (not claimable yet)" } (count("upcoming", total(|q| q.upcoming))) }
                    tr { th scope="row" { "Oldest wait" } (cell("oldest_age_seconds", raw(oldest), duration(oldest))) }
                }
            }
        }
        section aria-labelledby="depth-heading" {
            h2 #depth-heading { "Depth per queue" }
            @if depth.queues.is_empty() {
                p { "Every queue is empty." }
            } @else {
                div.table-scroll tabindex="0" role="region" aria-labelledby="depth-heading" {
                    table #depth-table {
                        caption { "Queues by study, kind, language and country" }
                        thead {
                            tr {
                                th scope="col" { "Study" }
                                th scope="col" { "Kind" }
                                th scope="col" { "Language" }
                                th scope="col" { "Country" }
                                th scope="col" class="num" { "Due" }
                                th scope="col" class="num" { "Overdue" }
                                th scope="col" class="num" { "Leased" }
                                th scope="col" class="num" { "Upcoming" }
                                th scope="col" class="num" { "Oldest wait" }
                            }
                        }
                        tbody {
                            @for queue in &depth.queues {
                                tr data-queue={ (queue.study_id) "/" (queue.kind) "/" (queue.language) "/" (queue.country) } {
                                    th scope="row" { a href={ "/ui/studies/" (queue.study_id) } { code { (queue.study_id) } } }
                                    td { (words(&queue.kind)) }
                                    td { (queue.language) }
                                    td { (queue.country) }
                                    (count("due", queue.due))
                                    td.num data-metric="overdue" data-value=(queue.overdue) {
                                        @if queue.overdue > 0 { strong { (queue.overdue) " overdue" } } @else { "0" }
                                    }
                                    (count("leased", queue.leased))
                                    (count("upcoming", queue.upcoming))
                                    (cell("oldest_age_seconds", raw(queue.oldest_age_seconds), duration(queue.oldest_age_seconds)))
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="agents-heading" {
            h2 #agents-heading { "Agents" }
            p {
                "Completions from " (agents.from.format("%Y-%m-%d %H:%M UTC"))
                " to " (agents.to.format("%Y-%m-%d %H:%M UTC")) "."
            }
            @if agents.agents.is_empty() {
                p { "No agent completed or holds an item in this range." }
            } @else {
                table #agents-table {
                    caption { "Completions per agent" }
                    thead {
                        tr {
                            th scope="col" { "Agent" }
                            th scope="col" class="num" { "Completions" }
                            th scope="col" { "By outcome" }
                            th scope="col" class="num" { "Mean handling time" }
                            th scope="col" class="num" { "Holding now" }
                        }
                    }
                    tbody {
                        @for agent in &agents.agents {
                            tr data-agent=(agent.agent_id) {
                                th scope="row" { code { (agent.agent_id) } }
                                (count("completions", agent.completions))
                                td {
                                    (agent.by_outcome.iter()
                                        .map(|(outcome, n)| format!("{}: {n}", words(outcome)))
                                        .collect::<Vec<_>>().join(", "))
                                }
                                (cell("mean_handle_seconds", raw(agent.mean_handle_seconds),
                                    decimal(agent.mean_handle_seconds.map(|s| s / 60.0), 1) + " min"))
                                (count("holding", agent.holding))
                            }
                        }
                    }
                }
            }
        }
    };
    layout("Work queues", Some(principal), None, Some(depth.at), &live)
}

// ---------------------------------------------------------------------------------------------
// Journey timeline.

/// An event's field value as text; objects (the contact) as a nested list.
fn field(value: &Value) -> Markup {
    match value {
        Value::Object(map) => html! {
            dl.fields {
                @for (name, value) in map {
                    dt { (words(name)) }
                    dd { (field(value)) }
                }
            }
        },
        Value::String(text) => html! { (text) },
        Value::Null => html! { "–" },
        other => html! { (other.to_string()) },
    }
}

pub(super) fn journey_page(principal: &Principal, timeline: &Timeline) -> Markup {
    let live = html! {
        table #journey-summary {
            caption { "The journey now" }
            tbody {
                tr { th scope="row" { "Journey" } td data-metric="journey_id" data-value=(timeline.journey_id) { code { (timeline.journey_id) } } }
                tr { th scope="row" { "Study" } td { a href={ "/ui/studies/" (timeline.study_id) } { code { (timeline.study_id) } } } }
                tr { th scope="row" { "Candidate (pseudonym)" } td { code { (timeline.candidate_id) } } }
                tr { th scope="row" { "Stage" } td data-metric="stage" data-value=(timeline.stage) { (words(&timeline.stage)) } }
                tr { th scope="row" { "Personal data erased" } td data-metric="erased" data-value=(timeline.erased) { (if timeline.erased { "Yes" } else { "No" }) } }
                tr { th scope="row" { "Version" } (count("version", i64::try_from(timeline.version).unwrap_or(i64::MAX))) }
            }
        }
        section aria-labelledby="history-heading" {
            h2 #history-heading { "History, oldest first" }
            ol.timeline #timeline {
                @for entry in &timeline.entries {
                    li data-sequence=(entry.sequence) data-type=(entry.kind) {
                        h3 { (words(&entry.kind)) }
                        p.meta {
                            time datetime=(entry.at.to_rfc3339()) { (entry.at.format("%Y-%m-%d %H:%M UTC")) }
                            " · stage after: " (words(&entry.stage))
                            " · FHIR " code { (entry.fhir_subject_state) }
                        }
                        @if !entry.data.is_empty() {
                            (field(&Value::Object(entry.data.clone())))
                        }
                    }
                }
            }
        }
    };
    // The journey id is not personal data; the title names the stage so that a screen reader
    // user hears where the journey stands first.
    let title = format!("Journey: {}", words(&timeline.stage));
    layout(&title, Some(principal), None, None, &live)
}
