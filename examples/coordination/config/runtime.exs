import Config

# Everything operational comes from the environment at boot, so one release
# runs in every environment. Secrets may come from files (`<NAME>_FILE`, e.g.
# Docker/Swarm secrets); the file's content is used as-is apart from one
# trailing newline, so multi-line values and values with spaces survive.
env_or_file = fn name ->
  case System.get_env(name <> "_FILE") do
    path when is_binary(path) and path != "" ->
      case File.read(path) do
        {:ok, content} ->
          content |> String.replace_suffix("\n", "") |> String.replace_suffix("\r", "")

        {:error, reason} ->
          raise "#{name}_FILE=#{path} cannot be read: #{:file.format_error(reason)}"
      end

    _ ->
      case System.get_env(name) do
        "" -> nil
        value -> value
      end
  end
end

positive_integer = fn name, default ->
  case System.get_env(name) do
    nil ->
      default

    "" ->
      default

    text ->
      case Integer.parse(String.trim(text)) do
        {value, ""} when value >= 0 -> value
        _ -> raise "#{name}=#{inspect(text)} must be a non-negative integer"
      end
  end
end

if config_env() != :test do
  config :coordination,
    port: positive_integer.("PORT", 4000),
    drain_seconds: positive_integer.("DRAIN_SECONDS", 5),
    database_url: env_or_file.("DATABASE_URL"),
    secret_key_base: env_or_file.("SECRET_KEY_BASE"),
    debug: System.get_env("COORDINATION_DEBUG") in ["1", "true"],
    cluster_dns_query: env_or_file.("CLUSTER_DNS_QUERY"),
    cluster_node_basename: System.get_env("CLUSTER_NODE_BASENAME") || "coordination",
    cluster_poll_seconds: positive_integer.("CLUSTER_POLL_SECONDS", 5)
end
