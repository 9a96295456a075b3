//! The results: JSON for tools, a markdown table for people, an SVG plot of the
//! per-packet costs.

use std::{fmt::Write as _, fs, path::Path};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::{machine::Machine, stats::Trials};

/// Unit of the per-packet rows (the ones plotted).
pub const NS_PER_PACKET: &str = "ns/packet";

/// One measured figure.
#[derive(Debug, Clone)]
pub struct Row {
    /// Section title, e.g. "1. per packet".
    pub section: String,
    /// What was measured.
    pub name: String,
    /// Unit of `value`.
    pub unit: String,
    /// The figure.
    pub value: Trials,
    /// Ratios to baselines of the same run, e.g. ("encap floor", 1.4).
    pub ratios: Vec<(String, f64)>,
    /// How it was measured, caveats.
    pub note: String,
}

/// Everything one `vip-bench` invocation measured.
#[derive(Debug)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// The command line that produced it.
    pub command: String,
    /// Figures in the order measured.
    pub rows: Vec<Row>,
    /// Sections or figures that could not be measured, and why.
    pub missing: Vec<String>,
}

impl Report {
    /// Adds a figure.
    pub fn push(
        &mut self,
        section: &str,
        name: impl Into<String>,
        unit: &str,
        value: Trials,
    ) -> &mut Row {
        self.rows.push(Row {
            section: section.into(),
            name: name.into(),
            unit: unit.into(),
            value,
            ratios: Vec::new(),
            note: String::new(),
        });
        self.rows.last_mut().expect("just pushed")
    }

    /// The results as JSON.
    pub fn json(&self) -> Value {
        json!({
            "machine": {
                "cpu": self.machine.cpu,
                "cpus": self.machine.cpus,
                "kernel": self.machine.kernel,
                "load_at_start": self.machine.load_at_start,
                "load_at_end": super::machine::load_average(),
            },
            "command": self.command,
            "rows": self.rows.iter().map(|r| json!({
                "section": r.section,
                "name": r.name,
                "unit": r.unit,
                "median": r.value.median,
                "min": r.value.min,
                "max": r.value.max,
                "trials": r.value.n,
                "ratios": r.ratios.iter().map(|(k, v)| json!({"to": k, "ratio": v})).collect::<Vec<_>>(),
                "note": r.note,
            })).collect::<Vec<_>>(),
            "missing": self.missing,
        })
    }

    /// The results as markdown: one table per section.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "Machine: {}  ", self.machine.describe());
        let _ = writeln!(
            md,
            "Load average at start {}, at end {} (a busy shared machine widens min–max)  ",
            self.machine.load_at_start,
            super::machine::load_average()
        );
        let _ = writeln!(md, "Command: `{}`  ", self.command);
        let _ = writeln!(
            md,
            "Each figure: median of N trials [min – max]. Ratios are of medians from the same run."
        );
        let mut section = None;
        for r in &self.rows {
            if section != Some(&r.section) {
                section = Some(&r.section);
                let _ = writeln!(md, "\n### {}\n", r.section);
                let _ = writeln!(
                    md,
                    "| figure | median | [min – max] | unit | N | ratios | note |"
                );
                let _ = writeln!(md, "|---|---:|---|---|---:|---|---|");
            }
            let ratios = r
                .ratios
                .iter()
                .map(|(k, v)| format!("{v:.2}× {k}"))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                md,
                "| {} | {} | [{} – {}] | {} | {} | {} | {} |",
                r.name,
                num(r.value.median),
                num(r.value.min),
                num(r.value.max),
                r.unit,
                r.value.n,
                ratios,
                r.note
            );
        }
        if !self.missing.is_empty() {
            let _ = writeln!(md, "\n### Not measured\n");
            for m in &self.missing {
                let _ = writeln!(md, "- {m}");
            }
        }
        md
    }

    /// Horizontal bars of every per-packet figure (median, with a min–max whisker).
    pub fn svg(&self) -> String {
        let rows: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.unit == NS_PER_PACKET)
            .collect();
        let (label_w, bar_w, row_h, top) = (420.0, 460.0, 22.0, 50.0);
        let height = top + row_h * rows.len() as f64 + 40.0;
        let width = label_w + bar_w + 90.0;
        let max = rows.iter().map(|r| r.value.max).fold(1.0, f64::max);
        let scale = bar_w / max;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="10" y="20" font-size="14" font-weight="bold">vip per-packet cost (ns, BPF_PROG_TEST_RUN; median, min–max)</text>"#
        );
        let _ = writeln!(
            s,
            r#"<text x="10" y="38" fill="dimgray">{}</text>"#,
            esc(&self.machine.describe())
        );
        for (i, r) in rows.iter().enumerate() {
            let y = top + row_h * i as f64;
            let fill = if r.name.contains("floor") {
                "#9aa"
            } else {
                "#47a"
            };
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
                label_w - 6.0,
                y + 14.0,
                esc(&format!("{} · {}", short(&r.section), r.name))
            );
            let _ = writeln!(
                s,
                r#"<rect x="{label_w}" y="{}" width="{:.1}" height="{}" fill="{fill}"/>"#,
                y + 3.0,
                r.value.median * scale,
                row_h - 6.0
            );
            let (x0, x1, ym) = (
                label_w + r.value.min * scale,
                label_w + r.value.max * scale,
                y + row_h / 2.0,
            );
            let _ = writeln!(
                s,
                r#"<line x1="{x0:.1}" y1="{ym}" x2="{x1:.1}" y2="{ym}" stroke="black"/>"#
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{}">{}</text>"#,
                label_w + r.value.max * scale + 4.0,
                y + 14.0,
                num(r.value.median)
            );
        }
        let _ = writeln!(s, "</svg>");
        s
    }

    /// Writes results.json, results.md and per_packet.svg into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let json = serde_json::to_string_pretty(&self.json()).expect("JSON of plain values");
        for (name, body) in [
            ("results.json", json),
            ("results.md", self.markdown()),
            ("per_packet.svg", self.svg()),
        ] {
            let path = dir.join(name);
            fs::write(&path, body).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

fn short(section: &str) -> &str {
    section.split_once(' ').map_or(section, |(n, _)| n)
}

/// A figure with sensible precision.
pub fn num(v: f64) -> String {
    // Whole numbers, and anything from 100 up, without decimals.
    if (v == v.trunc() && v.abs() < 1e15) || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 {
        format!("{v:.3}")
    } else {
        format!("{v:.4}")
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
