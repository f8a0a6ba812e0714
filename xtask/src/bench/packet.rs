pub fn run() -> anyhow::Result<()> { anyhow::bail!("packet benchmark: being written") }
