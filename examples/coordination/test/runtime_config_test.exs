defmodule Coordination.RuntimeConfigTest do
  use ExUnit.Case, async: false

  @runtime Path.expand("../config/runtime.exs", __DIR__)
  @vars ~w(PORT DRAIN_SECONDS DATABASE_URL DATABASE_URL_FILE SECRET_KEY_BASE SECRET_KEY_BASE_FILE
           COORDINATION_DEBUG CLUSTER_DNS_QUERY CLUSTER_NODE_BASENAME CLUSTER_POLL_SECONDS)

  setup do
    saved = Map.new(@vars, &{&1, System.get_env(&1)})
    Enum.each(@vars, &System.delete_env/1)

    on_exit(fn ->
      Enum.each(saved, fn
        {name, nil} -> System.delete_env(name)
        {name, value} -> System.put_env(name, value)
      end)
    end)

    dir = Path.join(System.tmp_dir!(), "coordination-config-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf!(dir) end)
    {:ok, dir: dir}
  end

  defp prod_config, do: @runtime |> Config.Reader.read!(env: :prod) |> Keyword.fetch!(:coordination)

  test "defaults when nothing is set" do
    config = prod_config()
    assert config[:port] == 4000
    assert config[:drain_seconds] == 5
    assert config[:database_url] == nil
    assert config[:debug] == false
    assert config[:cluster_dns_query] == nil
    assert config[:cluster_node_basename] == "coordination"
  end

  test "plain variables" do
    System.put_env(%{
      "PORT" => "8080",
      "DRAIN_SECONDS" => "12",
      "DATABASE_URL" => "postgres://u:p@db/app",
      "COORDINATION_DEBUG" => "1",
      "CLUSTER_DNS_QUERY" => "tasks.coordination",
      "CLUSTER_NODE_BASENAME" => "coord"
    })

    config = prod_config()
    assert config[:port] == 8080
    assert config[:drain_seconds] == 12
    assert config[:database_url] == "postgres://u:p@db/app"
    assert config[:debug] == true
    assert config[:cluster_dns_query] == "tasks.coordination"
    assert config[:cluster_node_basename] == "coord"
  end

  test "*_FILE secrets keep spaces and inner newlines, lose one trailing newline", %{dir: dir} do
    secret = "line one with  spaces\nline two \"quoted\" $HOME\n"
    File.write!(Path.join(dir, "secret"), secret)
    File.write!(Path.join(dir, "db"), "postgres://u:p w@db:5432/app\n")
    System.put_env("SECRET_KEY_BASE_FILE", Path.join(dir, "secret"))
    System.put_env("DATABASE_URL_FILE", Path.join(dir, "db"))
    # The file wins over the plain variable.
    System.put_env("DATABASE_URL", "postgres://ignored/app")

    config = prod_config()
    assert config[:secret_key_base] == "line one with  spaces\nline two \"quoted\" $HOME"
    assert config[:database_url] == "postgres://u:p w@db:5432/app"
  end

  test "an unreadable *_FILE and a bad number fail the boot with the variable's name", %{dir: dir} do
    System.put_env("SECRET_KEY_BASE_FILE", Path.join(dir, "missing"))
    assert_raise RuntimeError, ~r/SECRET_KEY_BASE_FILE=.*missing.*cannot be read/, &prod_config/0
    System.delete_env("SECRET_KEY_BASE_FILE")

    System.put_env("PORT", "http")
    assert_raise RuntimeError, ~r/PORT="http" must be a non-negative integer/, &prod_config/0
  end
end
