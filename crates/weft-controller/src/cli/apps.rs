use super::{print_json, table, ConnectArgs};

/// `weft apps`: apps and their tags.
#[derive(Debug, Clone, clap::Args)]
pub struct AppsArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
}

impl AppsArgs {
    pub async fn run(self) -> anyhow::Result<()> {
        let list = self.connect.client()?.apps().await?;
        if self.connect.json {
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
        print!("{}", table(&["APP", "TAG", "CLAIMED"], &rows));
        Ok(())
    }
}
