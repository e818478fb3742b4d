//! `weft apps`: the apps the controller knows, their tags and whether a host claims them.

use crate::connect::{print_json, ConnectArgs};

/// `weft apps`: apps and their tags.
#[derive(Debug, Clone, clap::Args)]
pub struct AppsArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub async fn run(a: AppsArgs) -> anyhow::Result<()> {
    let list = a.connect.client()?.apps().await?;
    if a.connect.json {
        return print_json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .apps
        .iter()
        .map(|a| {
            vec![
                a.id.clone(),
                a.tag.to_string(),
                if a.claimed { "yes" } else { "no" }.to_string(),
            ]
        })
        .collect();
    crate::table::print("", &["APP", "TAG", "CLAIMED"], &rows);
    Ok(())
}
