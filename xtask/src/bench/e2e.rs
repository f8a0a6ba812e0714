pub fn run() -> anyhow::Result<()> { anyhow::bail!("e2e benchmark: being written") }
