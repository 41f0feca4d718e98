//! The partitions panel: which host of the consumer group owns each partition of the topic (this
//! host's marked), since when, in which generation, its stored position and the lag its owner last
//! reported with that report's age; and the group's last rebalances. Read from `/api/partitions`
//! every [`PARTITIONS_REFRESH`], and at once when this host pushes a rebalance on the live stream.

use iotstream_api::{ClusterView, PartitionStatus, RebalanceEvent};
use leptos::prelude::*;

use crate::fetch::{get_json, loaded, tick_every};
use crate::live::LiveFeed;

/// How often the panel is read again: as often as hosts report their lag (every 5 s), so a lag
/// shown is at most one report old.
pub const PARTITIONS_REFRESH: std::time::Duration = std::time::Duration::from_secs(5);

/// A missing value.
const NONE: &str = "–";

/// `owner`, marked when it is `this_host`.
pub fn owner_text(owner: Option<&str>, this_host: &str) -> String {
    match owner {
        None => NONE.to_owned(),
        Some(owner) if owner == this_host => format!("{owner} (this host)"),
        Some(owner) => owner.to_owned(),
    }
}

/// How long ago something was, `seconds` ago, to a minute's or an hour's precision past those.
pub fn age_text(seconds: Option<i64>) -> String {
    match seconds {
        None => NONE.to_owned(),
        Some(s) if s < 1 => "just now".to_owned(),
        Some(s) if s < 120 => format!("{s} s ago"),
        Some(s) if s < 7200 => format!("{} min ago", s / 60),
        Some(s) => format!("{} h ago", s / 3600),
    }
}

/// Partitions as a list, `–` for none.
pub fn partitions_text(partitions: &[i32]) -> String {
    if partitions.is_empty() {
        return NONE.to_owned();
    }
    partitions.iter().map(i32::to_string).collect::<Vec<_>>().join(", ")
}

/// A pause in milliseconds: `850 ms`, `2.35 s`, `–` when not measured.
pub fn pause_text(pause_ms: Option<f64>) -> String {
    match pause_ms {
        None => NONE.to_owned(),
        Some(ms) if ms < 1000.0 => format!("{ms:.0} ms"),
        Some(ms) => format!("{:.2} s", ms / 1000.0),
    }
}

fn number(value: Option<i64>) -> String {
    value.map_or_else(|| NONE.to_owned(), |v| v.to_string())
}

fn utc(at: &chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// One row of the partitions table, as its cells read.
pub fn partition_cells(p: &PartitionStatus, this_host: &str) -> [String; 7] {
    [
        p.partition.to_string(),
        owner_text(p.owner.as_deref(), this_host),
        p.since.as_ref().map_or_else(|| NONE.to_owned(), utc),
        number(p.generation),
        number(p.next_offset),
        number(p.lag),
        age_text(p.lag_age_seconds),
    ]
}

/// One row of the rebalances table, as its cells read.
pub fn rebalance_cells(r: &RebalanceEvent, this_host: &str) -> [String; 5] {
    [
        utc(&r.at),
        owner_text(Some(&r.host), this_host),
        partitions_text(&r.assigned),
        partitions_text(&r.revoked),
        pause_text(r.pause_ms),
    ]
}

/// The panel: the partitions, and below them the last rebalances.
#[component]
pub fn PartitionsPanel() -> impl IntoView {
    let feed = expect_context::<LiveFeed>();
    let tick = tick_every(PARTITIONS_REFRESH);
    let answer = LocalResource::new(move || {
        tick.track();
        feed.rebalances.track();
        get_json::<ClusterView>("/api/partitions")
    });
    // One above the other: a partition's row is wide (a host's name, times, counts).
    view! {
        <div class="panel">
            <h2>"Partitions (owner host, lag as its owner last reported)"</h2>
            {move || loaded(answer.get(), |cluster| if cluster.partitions.is_empty() {
                view! { <p class="empty">"no partition owned or stored yet"</p> }.into_any()
            } else {
                let host = cluster.host.clone();
                view! { <table id="partitions"><thead><tr><th>"partition"</th><th>"owner"</th><th>"owned since (UTC)"</th>
                    <th>"generation"</th><th>"stored next offset"</th><th>"lag"</th><th>"reported"</th></tr></thead><tbody>
                    {cluster.partitions.iter().map(|p| {
                        let class = if p.owner.as_deref() == Some(host.as_str()) { "mine" } else { "" };
                        let [partition, owner, since, generation, offset, lag, age] = partition_cells(p, &host);
                        view! { <tr class=class><td class="num">{partition}</td><td>{owner}</td><td>{since}</td>
                            <td class="num">{generation}</td><td class="num">{offset}</td><td class="num">{lag}</td><td>{age}</td></tr> }
                    }).collect_view()}
                </tbody></table> }.into_any()
            })}
        </div>
        <div class="panel">
            <h2>"Last rebalances"</h2>
            {move || loaded(answer.get(), |cluster| if cluster.rebalances.is_empty() {
                view! { <p class="empty">"no rebalance recorded"</p> }.into_any()
            } else {
                let host = cluster.host.clone();
                view! { <table id="rebalances"><thead><tr><th>"time (UTC)"</th><th>"host"</th><th>"assigned"</th>
                    <th>"revoked"</th><th>"pause"</th></tr></thead><tbody>
                    {cluster.rebalances.iter().map(|r| {
                        let [at, host, assigned, revoked, pause] = rebalance_cells(r, &host);
                        view! { <tr><td>{at}</td><td>{host}</td><td>{assigned}</td><td>{revoked}</td><td class="num">{pause}</td></tr> }
                    }).collect_view()}
                </tbody></table> }.into_any()
            })}
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn cells_read_as_an_operator_expects() {
        let since = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).single();
        let mine = PartitionStatus {
            partition: 2,
            owner: Some("node-a-41".into()),
            since,
            generation: Some(3),
            next_offset: Some(1200),
            lag: Some(17),
            lag_at: since,
            lag_age_seconds: Some(4),
        };
        assert_eq!(
            partition_cells(&mine, "node-a-41"),
            ["2", "node-a-41 (this host)", "2026-12-01 10:00:00", "3", "1200", "17", "4 s ago"].map(String::from)
        );
        let unowned = PartitionStatus {
            owner: None,
            since: None,
            generation: None,
            lag: None,
            lag_at: None,
            lag_age_seconds: None,
            ..mine
        };
        assert_eq!(partition_cells(&unowned, "node-a-41"), ["2", "–", "–", "–", "1200", "–", "–"].map(String::from));
        let rebalance = RebalanceEvent {
            at: since.unwrap_or_default(),
            host: "node-b-7".into(),
            assigned: vec![0, 1],
            revoked: vec![],
            pause_ms: Some(2350.0),
        };
        assert_eq!(
            rebalance_cells(&rebalance, "node-a-41"),
            ["2026-12-01 10:00:00", "node-b-7", "0, 1", "–", "2.35 s"].map(String::from)
        );
    }

    #[test]
    fn ages_and_pauses_round_to_what_matters() {
        let ages: Vec<String> = [0, 59, 119, 120, 7199, 7200].into_iter().map(|s| age_text(Some(s))).collect();
        assert_eq!(ages, ["just now", "59 s ago", "119 s ago", "2 min ago", "119 min ago", "2 h ago"]);
        assert_eq!(pause_text(Some(12.4)), "12 ms");
        assert_eq!(pause_text(None), "–");
    }
}
