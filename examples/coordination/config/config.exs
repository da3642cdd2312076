import Config

# Defaults; config/runtime.exs overrides them from the environment at boot.
config :coordination,
  port: 4000,
  drain_seconds: 5,
  database_url: nil,
  debug: false,
  cluster_dns_query: nil,
  cluster_node_basename: "coordination",
  cluster_poll_seconds: 5,
  secret_key_base: nil,
  install_signal_handler: true

if config_env() == :test do
  # Port 0: the OS picks a free port, so test runs never collide.
  config :coordination, port: 0, install_signal_handler: false
  config :logger, level: :warning
end
