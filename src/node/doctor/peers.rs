//! The checks a running node asks of its live peers: whether they reach
//! its sync port, HTTPS and HTTP from outside (they dial back, see
//! [`crate::mesh::check`]), and how far its clock is from theirs.

use std::sync::Arc;

use super::{Check, State, check};
use crate::identity::AuthorKey;
use crate::mesh::check::{self, CheckAnswer, CheckRequest, Heard, Outcome};
use crate::mesh::peers::LivePeers;

/// What a running node asks its live peers to try (see
/// [`crate::mesh::check`]).
#[derive(Debug, Clone)]
pub struct Reach {
    /// The live connections.
    pub peers: Arc<LivePeers>,
    /// The advertised sync address, `HOST:PORT`.
    pub sync: String,
    /// The HTTPS origin, with a domain.
    pub web: Option<String>,
    /// The plain HTTP origin that redirects there, with a domain.
    pub http: Option<String>,
}

/// Peers asked at most: enough to tell a firewall from one broken peer.
pub const PEERS_ASKED: usize = 3;

/// A clock this far from the peers' (the median) is a warning ...
pub const CLOCK_WARNING_US: i64 = 30 * 1_000_000;
/// ... and this far, failing: signed timestamps and HTTP signatures are
/// judged by other nodes' clocks.
pub const CLOCK_FAILING_US: i64 = 5 * 60 * 1_000_000;

/// What each asked peer said (or why it said nothing).
pub type Answers = Vec<Result<Heard, (AuthorKey, String)>>;

/// Asks up to [`PEERS_ASKED`] live peers to dial back, at once.
pub async fn ask_peers(reach: &Reach) -> Answers {
    let request = CheckRequest {
        sync: Some(reach.sync.clone()),
        web: reach.web.clone(),
        http: reach.http.clone(),
    };
    let mut asked = tokio::task::JoinSet::new();
    for (peer, connection) in reach.peers.list().into_iter().take(PEERS_ASKED) {
        let request = request.clone();
        asked.spawn(async move {
            check::ask(&connection, peer, &request)
                .await
                .map_err(|e| (peer, e.to_string()))
        });
    }
    let mut out = Vec::new();
    while let Some(done) = asked.join_next().await {
        if let Ok(answer) = done {
            out.push(answer);
        }
    }
    out
}

fn short(key: &AuthorKey) -> String {
    key.to_string()[..8].to_string()
}

/// One address's line from what the peers said.
fn reached(
    name: &'static str,
    what: &str,
    fix: &str,
    answers: &Answers,
    outcome: impl Fn(&CheckAnswer) -> &Outcome,
) -> Check {
    if answers.is_empty() {
        return check(
            name,
            State::Warning,
            format!(
                "no live peer to ask whether {what} is reachable from outside: follow someone (or start with --peer), then run the doctor again"
            ),
        );
    }
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    let mut refused = Vec::new();
    for a in answers {
        match a {
            Ok(h) => match outcome(&h.answer) {
                Outcome::Reached => ok.push(short(&h.peer)),
                Outcome::Failed(why) => failed.push(format!("{}: {why}", short(&h.peer))),
                Outcome::Refused(why) => refused.push(format!("{}: {why}", short(&h.peer))),
                Outcome::NotAsked => {}
            },
            Err((peer, why)) => refused.push(format!("{}: {why}", short(peer))),
        }
    }
    if !ok.is_empty() {
        check(
            name,
            State::Ok,
            format!(
                "{what} reached from outside by {} of {} peers ({})",
                ok.len(),
                answers.len(),
                ok.join(", ")
            ),
        )
    } else if !failed.is_empty() {
        check(
            name,
            State::Failing,
            format!("no peer could reach {what} ({}): {fix}", failed.join("; ")),
        )
    } else {
        check(
            name,
            State::Warning,
            format!("no peer would try {what} ({})", refused.join("; ")),
        )
    }
}

/// The lines that need the peers: the sync port, the HTTPS port and the
/// clock.
pub fn reach_checks(reach: &Reach, answers: &Answers) -> Vec<Check> {
    let port = reach.sync.rsplit(':').next().unwrap_or("4433");
    let mut out = vec![reached(
        "sync port",
        &format!("your sync address {}", reach.sync),
        &format!("open UDP port {port} in the machine's and the provider's firewall"),
        answers,
        |a| &a.sync,
    )];
    if let Some(web) = &reach.web {
        out.push(reached(
            "https port",
            &format!("your site {web}"),
            "open TCP port 443 in the machine's and the provider's firewall",
            answers,
            |a| &a.web,
        ));
    }
    if let Some(http) = &reach.http {
        out.push(reached(
            "http port",
            &format!("{http} (it sends browsers and the CA to HTTPS)"),
            "open TCP port 80 in the machine's and the provider's firewall",
            answers,
            |a| &a.http,
        ));
    }
    let mut offsets: Vec<i64> = answers
        .iter()
        .filter_map(|a| a.as_ref().ok())
        .map(|h| h.offset_us)
        .collect();
    offsets.sort_unstable();
    out.push(match offsets.get(offsets.len() / 2) {
        None => check(
            "clock",
            State::Warning,
            "no live peer to compare the clock with",
        ),
        Some(&median) => {
            let said = format!(
                "your clock is {:.1} s {} the median of {} peers",
                median.unsigned_abs() as f64 / 1e6,
                if median > 0 { "behind" } else { "ahead of" },
                offsets.len()
            );
            let fix = "set it right (`timedatectl set-ntp true`), since every entry you sign carries its time";
            if median.abs() > CLOCK_FAILING_US {
                check("clock", State::Failing, format!("{said}: {fix}"))
            } else if median.abs() > CLOCK_WARNING_US {
                check("clock", State::Warning, format!("{said}: {fix}"))
            } else {
                check("clock", State::Ok, said)
            }
        }
    });
    out
}
