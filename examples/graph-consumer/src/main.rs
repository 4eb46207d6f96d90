//! `graph-consumer --kafka HOST:PORT --region R --tenant T`: rebuilds the
//! tenant's contact graph from `iris.R.graph` and prints it as JSON.

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut kafka, mut region, mut tenant) = (None, None, None);
    while let Some(flag) = args.next() {
        let value = args.next();
        match flag.as_str() {
            "--kafka" => kafka = value,
            "--region" => region = value,
            "--tenant" => tenant = value,
            other => anyhow::bail!(
                "unknown argument {other:?}; usage: graph-consumer --kafka HOST:PORT --region R --tenant T"
            ),
        }
    }
    let (Some(kafka), Some(region), Some(tenant)) = (kafka, region, tenant) else {
        anyhow::bail!("usage: graph-consumer --kafka HOST:PORT --region R --tenant T");
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let graph = rt.block_on(iris_example_graph_consumer::rebuild(&kafka, &region, &tenant))?;
    println!("{}", serde_json::to_string_pretty(&graph)?);
    eprintln!("{} records of tenant {tenant} folded", graph.records);
    Ok(())
}
