use anyhow::Result;
use serde::Serialize;

use crate::chapter;
use crate::exit::Exit;
use crate::output::{Paint, Report, Ui, emit};

#[derive(Serialize)]
pub struct ChapterEntry {
    pub id: u8,
    pub key: String,
    pub label: String,
    pub slug: String,
    pub title: String,
    pub summary: String,
    pub needs: Vec<String>,
    pub implemented: bool,
    pub boundary: Option<String>,
    pub files: Vec<String>,
    pub actions: Vec<String>,
}

#[derive(Serialize)]
pub struct ChaptersReport {
    pub chapters: Vec<ChapterEntry>,
}

impl Report for ChaptersReport {
    fn text(&self, _ui: &Ui) -> String {
        let mut out = String::new();
        for c in &self.chapters {
            let state = if c.implemented {
                Paint::ok("implemented")
            } else {
                Paint::warn("not implemented")
            };
            // A chapter not implemented yet describes what it is meant to do, never as done.
            let (summary_prefix, boundary_label) = if c.implemented {
                ("", "here")
            } else {
                ("planned: ", "planned here")
            };
            out += &format!(
                "{}  {:<18} {}  [{state}]\n    {summary_prefix}{}\n",
                Paint::bold(&c.label),
                c.slug,
                c.title,
                c.summary
            );
            if let Some(b) = &c.boundary {
                out += &format!("    {}\n", Paint::dim(format!("{boundary_label}: {b}")));
            }
        }
        out
    }
}

pub fn run(ui: &Ui) -> Result<Exit> {
    let chapters = chapter::all()
        .iter()
        .map(|c| ChapterEntry {
            id: c.id,
            key: c.key(),
            label: c.label(),
            slug: c.slug.clone(),
            title: c.title.clone(),
            summary: c.summary.clone(),
            needs: c.needs.clone(),
            implemented: c.implemented,
            boundary: c.boundary.clone(),
            files: c.files.iter().map(|f| f.path.clone()).collect(),
            actions: c.actions.iter().map(|a| a.build(&c.key()).id()).collect(),
        })
        .collect();
    emit(&ChaptersReport { chapters }, ui)
}
