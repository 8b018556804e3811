//! `hyper2kvm -c config.yaml`: a migration run. Progress on stderr (bars on a terminal, lines
//! otherwise), the summary table on stdout, the exit code from the run: 0 all done, 3 partial,
//! 1 failed, 130 interrupted (after cleaning up).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper2kvm::azure::{AzureSource, ExportOptions};
use hyper2kvm::core::{redact, Cleanups, ErrorKind, Limits};
use hyper2kvm::migrate::{
    DiskStatus, EventFn, FleetProgress, Interrupt, RunEvent, RunOptions, RunSummary, ShardFilter,
    Source, VmStatus, WarmMode,
};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::config::{ListFormat, ListPlan, UsageError};
use crate::fleet::{overall_line, vm_lines, IN_FLIGHT_LINES};
use crate::list::{connect, print_stdout};
use crate::progress::{clock, line_every, Rate, Ticker};
use crate::signal::run_interruptible;
use crate::tally::Tally;
use crate::units::human_bytes;

/// Flags of a migration run that are not in the config file.
pub struct Flags {
    /// No progress.
    pub quiet: bool,
    /// A selection of no VM is fine.
    pub allow_empty: bool,
    /// Hash images earlier runs finished in full.
    pub verify_images: bool,
    /// Only this shard of the VMs.
    pub shard: Option<ShardFilter>,
    /// How long to wait for a VM another worker holds.
    pub lock_wait: Duration,
    /// `sync` or `cutover` instead of a migration.
    pub warm: Option<WarmMode>,
}

/// Runs the migration the plan describes and returns the exit code.
pub async fn run(plan: ListPlan, flags: Flags) -> anyhow::Result<u8> {
    let quiet = flags.quiet;
    if plan.whole_subscription && !plan.allow_whole_subscription {
        return Err(UsageError(
            "this run would migrate every selected VM of whole subscriptions: name azure.resource_groups, or set azure.allow_whole_subscription: true".into(),
        )
        .into());
    }
    let c = connect(&plan).await?;
    let cleanups = Cleanups::new();
    let r = &plan.run;
    let mut export = ExportOptions::default();
    export.sas_duration = r.grant_duration;
    export.lro.timeout = r.operation_timeout;
    let azure = AzureSource::new(
        c.arm.clone(),
        c.http.clone(),
        plan.subscriptions.clone(),
        plan.selection.clone(),
        export,
        cleanups.clone(),
    );
    // Azure is every kind of source the engine reads through.
    let azure = Arc::new(azure);
    let source = Source::full(azure.clone()).with_incremental(azure);
    let mut opts = RunOptions::default();
    opts.plan = plan.migration.clone();
    opts.convert.compression = r.compression;
    opts.convert.chunk_size = r.chunk_size;
    opts.convert.concurrency = r.concurrency;
    opts.parallel_vms = r.parallel_vms;
    opts.parallel_fixups = r.parallel_fixups;
    opts.parallel_disks = r.parallel_disks;
    opts.limits = Limits::new(r.max_connections, r.bandwidth);
    opts.keep_snapshots = r.keep_snapshots;
    opts.cpu = r.cpu.clone();
    opts.network = r.network.clone();
    opts.target = r.target.clone();
    opts.guest = r.guest.clone().map(hyper2kvm::run::guest_hook);
    opts.allow_empty = flags.allow_empty;
    opts.verify_done_images = flags.verify_images;
    opts.shard = flags.shard;
    opts.lock_wait = flags.lock_wait;
    opts.warm = flags.warm;
    let display = Display::new(quiet);
    let ticker = crate::waiting::spawn(display.wait_sink());
    // The library call is the run: discovery through the source, then the migration. Its
    // error keeps its kind (exit code 2 for configuration, 130 for Ctrl-C, 1 else).
    let interrupt = Interrupt::new();
    let work = hyper2kvm::run::migrate_until(
        &source,
        cleanups.clone(),
        opts,
        Some(display.callback()),
        interrupt.clone(),
    );
    // A first SIGINT or SIGTERM asks the run to stop: it undoes what it started and writes
    // its records. A second one leaves at once.
    let run_id = plan.migration.run_id.clone();
    let result = run_interruptible(
        work,
        &interrupt,
        |name| {
            display.note(&format!(
                "hyper2kvm: {name}: stopping; revoking access grants, deleting snapshots, starting VMs it stopped, writing the records ({name} again to leave that undone)…"
            ))
        },
        |again| {
            display.note(&format!(
                "hyper2kvm: {again}: cleanup abandoned: check Azure for grants, snapshots tagged hyper2kvm-run={run_id} and stopped VMs (the VMs' report.json files list them, status interrupted)"
            ))
        },
    )
    .await?;
    ticker.abort();
    display.finish();
    let Some(result) = result else {
        return Ok(130);
    };
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            // Whatever stopped the run before it started, what it started is undone.
            for err in cleanups.wait_all().await {
                eprintln!(
                    "hyper2kvm: cleanup failed, check Azure by hand: {}",
                    redact(&err.to_string())
                );
            }
            if let Some(sim) = c.sim {
                sim.shutdown().await;
            }
            if e.kind() == ErrorKind::InvalidArgument && e.to_string().contains("matched no VM") {
                // Say what matched nothing (exit code 2 stays: the error keeps its kind).
                return Err(anyhow::Error::new(e).context(format!(
                    "no VM of subscription(s) {} matched: {}",
                    plan.subscriptions.join(", "),
                    plan.selection
                )));
            }
            return Err(e.into());
        }
    };
    if let Some(sim) = c.sim {
        sim.shutdown().await;
    }
    let text = match plan.format {
        ListFormat::Table => render_summary(&summary),
        ListFormat::Json => {
            let mut s = serde_json::to_string_pretty(&summary)?;
            s.push('\n');
            s
        }
    };
    Ok(finish(&text, &summary))
}

/// Ends a run: the summary `text` on stdout, then [`summary_lines`] on stderr, whatever
/// became of stdout (a full disk, a closed pipe), since they list what is left to do. Returns
/// the run's exit code; when stdout could not be written, that is said on stderr and a run
/// that would exit 0 exits 1 (any other code stays: it says more).
pub(crate) fn finish(text: &str, summary: &RunSummary) -> u8 {
    let printed = print_stdout(text, "writing the summary");
    for line in summary_lines(summary) {
        eprintln!("{}", redact(&line));
    }
    match printed {
        Ok(()) => summary.exit_code,
        Err(e) => {
            eprintln!("hyper2kvm: error: {}", redact(&format!("{e:#}")));
            summary.exit_code.max(1)
        }
    }
}

/// What stderr says at the end of a run: the sum, then every cleanup left to do by hand and
/// every record that could not be written, one line each, with what to do.
pub(crate) fn summary_lines(summary: &RunSummary) -> Vec<String> {
    let mut lines = Vec::new();
    let written = !summary
        .records_not_written
        .iter()
        .any(|r| r.path == summary.summary);
    lines.push(format!(
        "hyper2kvm: run {}{}: {} of {} VM(s) completed, {} downloaded in {:.1} s; summary {}{}",
        summary.run_id,
        summary
            .interrupted_by
            .as_deref()
            .map(|s| format!(" interrupted by {s}"))
            .unwrap_or_default(),
        summary.completed,
        summary.vms.len(),
        human_bytes(summary.bytes_downloaded),
        summary.seconds,
        summary.summary.display(),
        if written { "" } else { " (NOT WRITTEN)" },
    ));
    if let Some(shard) = &summary.shard {
        lines.push(format!(
            "hyper2kvm: shard {} of 0–{}{}",
            shard.index,
            shard.count.saturating_sub(1),
            shard
                .plan
                .as_ref()
                .map(|p| format!(" of plan {}", p.display()))
                .unwrap_or_else(|| " by VM id hash".into())
        ));
    }
    for d in &summary.plan_deviations {
        lines.push(format!(
            "hyper2kvm: {}: {}/{}: {}",
            if d.migrated { "note" } else { "not migrated" },
            d.resource_group,
            d.name,
            d.detail
        ));
    }
    for c in &summary.cleanup_errors {
        lines.push(format!("hyper2kvm: cleanup left to do: {}", c.line()));
    }
    for r in &summary.records_not_written {
        lines.push(format!(
            "hyper2kvm: error: record not written: {}: {}",
            r.path.display(),
            r.error
        ));
    }
    lines
}

/// The widest error a summary table shows: one line; the report has the rest.
const ERROR_WIDTH: usize = 72;

/// The table printed at the end of a run.
pub(crate) fn render_summary(s: &RunSummary) -> String {
    let rows: Vec<[String; 6]> = s
        .vms
        .iter()
        .map(|v| {
            [
                v.resource_group.clone(),
                v.name.clone(),
                v.status.as_str().to_string(),
                format!("{}/{}", v.disks_done, v.disks_total),
                human_bytes(v.bytes_downloaded),
                v.error
                    .as_ref()
                    .map(|e| e.one_line(ERROR_WIDTH))
                    .unwrap_or_else(|| v.report.display().to_string()),
            ]
        })
        .collect();
    let header = [
        "RESOURCE GROUP",
        "VM",
        "STATUS",
        "DISKS",
        "DOWNLOADED",
        "REPORT / ERROR",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let last = cells.len() - 1;
        for (i, cell) in cells.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for row in &rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// Progress of a run, from the engine's [`FleetProgress`] (about once a second; see
/// [`crate::fleet`] for what each number is). On a terminal: an overall bar (VMs done and in
/// flight, bytes done of those expected, rate, ETA) above a line per VM in flight (its phase
/// and bytes; at most [`IN_FLIGHT_LINES`], then a count of the others). Otherwise: VM and
/// disk events as they happen, and every 10 seconds, also while nothing happens, the overall
/// line and the VMs in flight:
///
/// ```text
/// [12:00:01] 7/20 VMs done, 5 in flight; 1.20 GiB of ~3.90 GiB (31/45 disks known), 98.0 MiB/s, ETA 28s
///            vm-03  1m12s  120/480 MiB  vm-03_OsDisk_1: reading
/// ```
///
/// Until the engine's first progress comes, the events' tally stands in (and a disk being
/// read gets a bar of its own on a terminal). Nothing but errors when quiet.
pub(crate) struct Display {
    inner: Arc<Mutex<DisplayState>>,
    quiet: bool,
    ticker: Mutex<Option<Ticker>>,
}

struct DisplayState {
    multi: Option<MultiProgress>,
    /// The overall bar, on a terminal once the run has started.
    overall: Option<ProgressBar>,
    /// The lines of the VMs in flight under it, on a terminal.
    vm_bars: Vec<ProgressBar>,
    /// The engine's latest progress of the run as a whole.
    fleet: Option<FleetProgress>,
    /// The "waiting for …" line under the bars, while something waits long.
    wait_bar: Option<ProgressBar>,
    /// Off a terminal: the wait last printed, and when.
    wait_line: Option<(String, Instant)>,
    /// The bars of the disks being read, until the engine's progress comes.
    bars: BTreeMap<(String, String), ProgressBar>,
    tally: Tally,
    rate: Rate,
}

impl DisplayState {
    /// The overall line: the engine's progress, or the tally until it comes (its rate
    /// sampled now).
    fn overall_line(&mut self) -> String {
        if let Some(f) = &self.fleet {
            // While no disk is known, the sizes of the disks left bound the bytes.
            return overall_line(f, self.tally.at_most());
        }
        self.rate.sample(Instant::now(), self.tally.done());
        self.tally.line(self.rate.per_sec())
    }

    /// Whether the run has started and not yet ended.
    fn running(&self) -> bool {
        let ended = self
            .fleet
            .as_ref()
            .is_some_and(|f| f.vms > 0 && f.vms_finished >= f.vms);
        self.tally.started() && !self.tally.finished() && !ended
    }

    /// The plain lines of a tick: the overall line stamped with the time, and the VMs in
    /// flight under it, indented to its text.
    fn plain_lines(&mut self) -> String {
        let stamp = clock();
        let mut text = format!("{stamp} {}\n", self.overall_line());
        if let Some(f) = &self.fleet {
            for line in vm_lines(f, IN_FLIGHT_LINES) {
                text.push_str(&format!("{:w$}{line}\n", "", w = stamp.len() + 1));
            }
        }
        text
    }

    /// Redraws the overall bar, if any.
    fn draw_overall(&mut self) {
        if self.overall.is_none() {
            return;
        }
        let line = self.overall_line();
        let (done, total) = match &self.fleet {
            Some(f) => (f.bytes_done, f.bytes_expected),
            None => (self.tally.done(), self.tally.total().0),
        };
        if let Some(bar) = &self.overall {
            bar.set_length(total.max(done).max(1));
            bar.set_position(done);
            bar.set_message(line);
        }
    }

    /// On a terminal, redraws the lines of the VMs in flight under the overall bar: as many
    /// as there are lines to show, reused from one progress to the next.
    fn draw_vms(&mut self) {
        let (Some(m), Some(overall), Some(f)) = (&self.multi, &self.overall, &self.fleet) else {
            return;
        };
        let lines = vm_lines(f, IN_FLIGHT_LINES);
        while self.vm_bars.len() > lines.len() {
            let bar = self.vm_bars.pop().expect("longer");
            bar.finish_and_clear();
            m.remove(&bar);
        }
        while self.vm_bars.len() < lines.len() {
            let after = self.vm_bars.last().unwrap_or(overall);
            let bar = m.insert_after(after, ProgressBar::new(1));
            bar.set_style(ProgressStyle::with_template("  {wide_msg}").expect("valid template"));
            self.vm_bars.push(bar);
        }
        for (bar, line) in self.vm_bars.iter().zip(lines) {
            bar.set_message(line);
        }
    }
}

impl Display {
    pub(crate) fn new(quiet: bool) -> Display {
        let multi = (!quiet && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Display::with(multi, quiet, line_every())
    }

    /// A display drawing bars on `multi` (none: plain lines every `every`).
    fn with(multi: Option<MultiProgress>, quiet: bool, every: Duration) -> Display {
        let terminal = multi.is_some();
        // Log lines go between redraws of the bars.
        crate::logging::set_progress(multi.clone());
        let inner = Arc::new(Mutex::new(DisplayState {
            multi,
            overall: None,
            vm_bars: Vec::new(),
            fleet: None,
            wait_bar: None,
            wait_line: None,
            bars: BTreeMap::new(),
            tally: Tally::default(),
            rate: Rate::default(),
        }));
        // The clock drives the overall progress, so that it moves (and the rate falls) when
        // no event comes: a stalled download, a long snapshot.
        let ticker = (!quiet).then(|| {
            let state = inner.clone();
            let every = if terminal {
                Duration::from_secs(1)
            } else {
                every
            };
            Ticker::start(every, move || {
                let mut st = state.lock().unwrap();
                if terminal {
                    st.draw_overall();
                } else if st.running() {
                    // One write, so that no other line comes between.
                    eprint!("{}", st.plain_lines());
                }
            })
        });
        Display {
            inner,
            quiet,
            ticker: Mutex::new(ticker),
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(mut t) = self.ticker.lock().unwrap().take() {
            t.stop();
        }
        let mut st = self.inner.lock().unwrap();
        for (_, bar) in std::mem::take(&mut st.bars) {
            bar.finish_and_clear();
        }
        for bar in std::mem::take(&mut st.vm_bars) {
            bar.finish_and_clear();
        }
        if let Some(bar) = st.overall.take() {
            bar.finish_and_clear();
        }
        if let Some(bar) = st.wait_bar.take() {
            bar.finish_and_clear();
        }
        crate::logging::set_progress(None);
    }

    /// A line that must show even with `--quiet` (a signal, what it means).
    pub(crate) fn note(&self, text: &str) {
        let st = self.inner.lock().unwrap();
        match &st.multi {
            Some(m) => {
                let _ = m.println(text);
            }
            None => eprintln!("{text}"),
        }
    }

    /// Where long waits go: a status line under the bars on a terminal; off a terminal a
    /// plain line when a wait starts to show and every 10 s while it lasts; nothing when
    /// quiet.
    pub(crate) fn wait_sink(&self) -> crate::waiting::WaitSink {
        let inner = self.inner.clone();
        let quiet = self.quiet;
        Arc::new(move |status: Option<String>| {
            if quiet {
                return;
            }
            let mut st = inner.lock().unwrap();
            if let Some(m) = st.multi.clone() {
                match status {
                    Some(text) => {
                        let bar = st.wait_bar.get_or_insert_with(|| {
                            let bar = m.add(ProgressBar::new_spinner());
                            bar.set_style(
                                ProgressStyle::with_template("{spinner} {msg}")
                                    .expect("valid template"),
                            );
                            bar
                        });
                        bar.set_message(text);
                        bar.tick();
                    }
                    None => {
                        if let Some(bar) = st.wait_bar.take() {
                            bar.finish_and_clear();
                        }
                    }
                }
                return;
            }
            match status {
                Some(text) => {
                    let what = text.split(" (").next().unwrap_or("").to_string();
                    let due = match &st.wait_line {
                        Some((last, at)) => {
                            *last != what || at.elapsed() >= Duration::from_secs(10)
                        }
                        None => true,
                    };
                    if due {
                        eprintln!("hyper2kvm: {text}");
                        st.wait_line = Some((what, Instant::now()));
                    }
                }
                None => st.wait_line = None,
            }
        })
    }

    pub(crate) fn callback(&self) -> EventFn {
        let inner = self.inner.clone();
        let quiet = self.quiet;
        Arc::new(move |e: &RunEvent| {
            let mut st = inner.lock().unwrap();
            let st = &mut *st;
            let text = match e {
                RunEvent::RunStarted {
                    run_id,
                    vms,
                    dir,
                    bytes,
                } => {
                    st.tally.run_started(*vms, *bytes);
                    if let Some(m) = &st.multi {
                        let bar = m.insert(0, ProgressBar::new(1));
                        bar.set_style(
                            ProgressStyle::with_template("[{bar:20}] {wide_msg}")
                                .expect("valid template")
                                .progress_chars("=> "),
                        );
                        st.overall = Some(bar);
                        st.draw_overall();
                    }
                    Some(format!(
                        "hyper2kvm: run {run_id}: {vms} VM(s) selected, {} of disks, output in {}",
                        human_bytes(*bytes),
                        dir.display()
                    ))
                }
                RunEvent::VmStarted { vm, action, bytes } => {
                    st.tally.vm_started(vm, *bytes);
                    Some(format!("{vm}: {action}"))
                }
                RunEvent::Step { vm, message } => Some(format!("{vm}: {message}")),
                RunEvent::DiskStarted { vm, disk, size } => {
                    // No bar yet: until its ranges are known a bar would only say 0 B/0 B.
                    st.tally.disk_started(vm, disk, *size);
                    Some(format!("{vm}: {disk} ({}) started", human_bytes(*size)))
                }
                RunEvent::DiskProgress {
                    vm,
                    disk,
                    done,
                    total,
                } => {
                    st.tally.disk_progress(vm, disk, *done, *total);
                    let key = (vm.clone(), disk.clone());
                    // Once the engine's progress comes, the VMs' lines say it.
                    let wanted = st.fleet.is_none() && !st.bars.contains_key(&key);
                    if let (Some(m), true) = (&st.multi, wanted) {
                        let bar = m.add(ProgressBar::new(*total));
                        bar.set_style(
                            ProgressStyle::with_template(
                                "{msg:30!} [{bar:25}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
                            )
                            .expect("valid template")
                            .progress_chars("=> "),
                        );
                        bar.set_message(format!("{vm}/{disk}"));
                        st.bars.insert(key.clone(), bar);
                    }
                    if let Some(bar) = st.bars.get(&key) {
                        bar.set_length(*total);
                        bar.set_position(*done);
                    }
                    None
                }
                RunEvent::DiskFinished { vm, report } => {
                    st.tally
                        .disk_finished(vm, &report.name, report.virtual_size, report.status);
                    if let Some(bar) = st.bars.remove(&(vm.clone(), report.name.clone())) {
                        bar.finish_and_clear();
                    }
                    Some(match report.status {
                        DiskStatus::Failed => format!(
                            "{vm}: {} FAILED: {}",
                            report.name,
                            report
                                .error
                                .as_ref()
                                // Progress lines have room for the whole error; the
                                // table has one short line.
                                .map_or("?".into(), |e| format!(
                                    "{}: {}",
                                    e.kind.as_str(),
                                    e.detail
                                ))
                        ),
                        DiskStatus::AlreadyDone => format!(
                            "{vm}: {} already done: {}",
                            report.name,
                            report.output.display()
                        ),
                        _ => format!(
                            "{vm}: {} done: {} downloaded, {} skipped, {:.1} s -> {}",
                            report.name,
                            human_bytes(report.bytes_downloaded),
                            human_bytes(report.bytes_skipped),
                            report.seconds,
                            report.output.display()
                        ),
                    })
                }
                RunEvent::VmFinished { vm, status } => {
                    st.tally.vm_finished(vm);
                    st.draw_overall();
                    Some(match status {
                        VmStatus::Completed => format!("{vm}: completed"),
                        other => format!("{vm}: {}", other.as_str().to_uppercase()),
                    })
                }
                RunEvent::Fleet(f) => {
                    st.fleet = Some(f.clone());
                    // The VMs' lines replace the disks' bars.
                    for (_, bar) in std::mem::take(&mut st.bars) {
                        bar.finish_and_clear();
                    }
                    st.draw_overall();
                    st.draw_vms();
                    None
                }
                _ => None,
            };
            if quiet {
                return;
            }
            if let Some(text) = text {
                match &st.multi {
                    Some(m) => {
                        let _ = m.println(text);
                    }
                    None => eprintln!("{text}"),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_get_a_bar_once_their_ranges_are_known() {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::hidden());
        let display = Display::with(Some(multi), false, Duration::from_secs(3600));
        let events = display.callback();
        events(&RunEvent::RunStarted {
            run_id: "r".into(),
            vms: 2,
            dir: "out".into(),
            bytes: 2 << 30,
        });
        events(&RunEvent::VmStarted {
            vm: "a".into(),
            action: "export disks".into(),
            bytes: 1 << 30,
        });
        events(&RunEvent::DiskStarted {
            vm: "a".into(),
            disk: "a-os".into(),
            size: 1 << 30,
        });
        {
            let st = display.inner.lock().unwrap();
            assert!(
                st.bars.is_empty(),
                "a disk being exported has no 0 B/0 B bar"
            );
            let overall = st.overall.as_ref().expect("the overall bar");
            assert_eq!(
                overall.message(),
                "0/2 VMs done, 0 in flight; 0 B of at most 2.00 GiB"
            );
        }
        events(&RunEvent::DiskProgress {
            vm: "a".into(),
            disk: "a-os".into(),
            done: 1 << 20,
            total: 4 << 20,
        });
        {
            let mut st = display.inner.lock().unwrap();
            let bar = st.bars.get(&("a".into(), "a-os".into())).expect("its bar");
            assert_eq!((bar.position(), bar.length()), (1 << 20, Some(4 << 20)));
            st.draw_overall();
            let overall = st.overall.as_ref().unwrap();
            // 4 MiB of 1 GiB written: the other 1 GiB is guessed at 4 MiB too.
            assert!(
                overall
                    .message()
                    .starts_with("0/2 VMs done, 1 in flight; 1.00 MiB of ~8.00 MiB"),
                "{}",
                overall.message()
            );
        }
        display.finish();
        assert!(display.inner.lock().unwrap().overall.is_none());
    }

    /// A run of `vms` VMs of one 1 GiB disk each, with VM `a` started and its disk read.
    fn started(events: &EventFn, vms: usize) {
        events(&RunEvent::RunStarted {
            run_id: "r".into(),
            vms,
            dir: "out".into(),
            bytes: vms as u64 * GIB,
        });
        events(&RunEvent::VmStarted {
            vm: "a".into(),
            action: "export disks".into(),
            bytes: GIB,
        });
        events(&RunEvent::DiskStarted {
            vm: "a".into(),
            disk: "a-os".into(),
            size: GIB,
        });
        events(&RunEvent::DiskProgress {
            vm: "a".into(),
            disk: "a-os".into(),
            done: MIB,
            total: 4 * MIB,
        });
    }

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    /// 12 VMs in flight of 20: `a` reading, the others in their operations.
    fn twelve_in_flight() -> FleetProgress {
        let mut f = FleetProgress::default();
        f.vms = 20;
        f.vms_finished = 3;
        f.vms_in_flight = 12;
        f.disks = 20;
        f.disks_known = 4;
        f.bytes_done = 5 * MIB;
        f.bytes_known = 16 * MIB;
        f.bytes_expected = 80 * MIB;
        f.rate = Some(MIB as f64);
        f.eta_seconds = Some(75.0);
        let mut a = crate::fleet::tests::vm("a", "a-os: reading", 3.0);
        a.disks_reading = 1;
        a.bytes_done = MIB;
        a.bytes_known = 4 * MIB;
        f.in_flight = std::iter::once(a)
            .chain((0..11).map(|i| {
                crate::fleet::tests::vm(
                    &format!("b{i:02}"),
                    "deallocate (waiting for it)",
                    10.0 + f64::from(i),
                )
            }))
            .collect();
        f
    }

    #[test]
    fn the_engines_progress_replaces_the_disk_bars_with_a_line_per_vm() {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::hidden());
        let display = Display::with(Some(multi), false, Duration::from_secs(3600));
        let events = display.callback();
        started(&events, 20);
        assert_eq!(display.inner.lock().unwrap().bars.len(), 1, "a's disk bar");
        let f = twelve_in_flight();
        events(&RunEvent::Fleet(f.clone()));
        {
            let st = display.inner.lock().unwrap();
            assert!(st.bars.is_empty(), "the disk bars are gone");
            let overall = st.overall.as_ref().unwrap();
            assert_eq!(
                overall.message(),
                "3/20 VMs done, 12 in flight; 5.00 MiB of ~80.0 MiB (4/20 disks known), 1.00 MiB/s, ETA 2m"
            );
            assert_eq!(
                (overall.position(), overall.length()),
                (5 * MIB, Some(80 * MIB))
            );
            let lines: Vec<String> = st.vm_bars.iter().map(|b| b.message()).collect();
            assert_eq!(lines, vm_lines(&f, IN_FLIGHT_LINES));
            // The reader first, then the 7 longest running; the other 4 counted.
            assert_eq!(lines.len(), IN_FLIGHT_LINES + 1);
            assert!(lines[0].starts_with("a  "), "{lines:#?}");
            assert!(lines[1].starts_with("b10  "), "{lines:#?}");
            assert_eq!(lines[8], "+4 more: 4 in other steps");
        }
        // A disk read now gets no bar of its own: its VM's line says it.
        events(&RunEvent::DiskProgress {
            vm: "b00".into(),
            disk: "b00-os".into(),
            done: 0,
            total: MIB,
        });
        assert!(display.inner.lock().unwrap().bars.is_empty());
        // Fewer in flight: fewer lines.
        let mut f = twelve_in_flight();
        f.in_flight.truncate(2);
        f.vms_in_flight = 2;
        events(&RunEvent::Fleet(f));
        {
            let st = display.inner.lock().unwrap();
            let lines: Vec<String> = st.vm_bars.iter().map(|b| b.message()).collect();
            assert_eq!(lines.len(), 2, "{lines:#?}");
            assert!(lines[1].starts_with("b00  "), "{lines:#?}");
        }
        display.finish();
        let st = display.inner.lock().unwrap();
        assert!(st.vm_bars.is_empty() && st.overall.is_none());
    }

    #[test]
    fn plain_lines_are_the_overall_line_and_the_vms_in_flight() {
        let display = Display::with(None, false, Duration::from_secs(3600));
        let events = display.callback();
        started(&events, 20);
        {
            // Until the engine's progress comes, the tally's line alone.
            let mut st = display.inner.lock().unwrap();
            assert!(st.running());
            let text = st.plain_lines();
            assert_eq!(text.lines().count(), 1, "{text}");
            assert!(
                text.ends_with("] 0/20 VMs done, 1 in flight; 1.00 MiB of ~80.0 MiB\n"),
                "{text}"
            );
        }
        let f = twelve_in_flight();
        events(&RunEvent::Fleet(f.clone()));
        {
            let mut st = display.inner.lock().unwrap();
            let text = st.plain_lines();
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), 1 + IN_FLIGHT_LINES + 1, "{text}");
            assert_eq!(&lines[0][10..], &format!(" {}", overall_line(&f, 0)));
            // Under it, each VM's line indented to the text after the time.
            for (line, vm) in lines[1..].iter().zip(vm_lines(&f, IN_FLIGHT_LINES)) {
                assert_eq!(*line, format!("           {vm}"));
            }
        }
        // The run's last progress: every VM done, no more lines.
        let mut f = twelve_in_flight();
        f.vms_finished = 20;
        f.vms_in_flight = 0;
        f.in_flight.clear();
        events(&RunEvent::Fleet(f));
        assert!(!display.inner.lock().unwrap().running());
        display.finish();
    }
}
