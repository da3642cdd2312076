defmodule Coordination.HealthTest do
  use ExUnit.Case, async: false

  import Coordination.TestClient
  alias Coordination.Health

  defp restart_health_with(database_url) do
    Application.put_env(:coordination, :database_url, database_url)
    :ok = Supervisor.terminate_child(Coordination.Supervisor, Health)
    {:ok, _} = Supervisor.restart_child(Coordination.Supervisor, Health)
  end

  setup do
    on_exit(fn -> restart_health_with(nil) end)
  end

  test "with a reachable database /health is ok" do
    {:ok, db} = :gen_tcp.listen(0, [:binary, active: false])
    {:ok, port} = :inet.port(db)
    restart_health_with("postgres://user:p%40ss@127.0.0.1:#{port}/coordination")

    response = request("GET", "/health")
    assert response.status == 200
    assert response.json["db"] == "ok"
    assert response.json["status"] == "ok"
    :gen_tcp.close(db)
  end

  test "with an unreachable database /health is 503" do
    # A port that was free a moment ago: nothing listens there.
    {:ok, probe} = :gen_tcp.listen(0, [:binary, active: false])
    {:ok, port} = :inet.port(probe)
    :gen_tcp.close(probe)
    restart_health_with("ecto://user:pass@127.0.0.1:#{port}/coordination")

    response = request("GET", "/health")
    assert response.status == 503
    assert response.json["db"] == "unavailable"
    assert response.json["status"] == "unavailable"
  end

  test "until start-up has finished /health is 503 starting" do
    :persistent_term.erase({Health, :started})
    on_exit(&Health.mark_started/0)

    starting = request("GET", "/health")
    assert starting.status == 503
    assert starting.json["status"] == "starting"

    Health.mark_started()
    assert request("GET", "/health").status == 200
  end

  test "database targets come from the URL; the port defaults to 5432" do
    assert Health.database_target(nil) == nil
    assert Health.database_target("postgres://u:p@db.internal/app") == {~c"db.internal", 5432}
    assert Health.database_target("ecto://u:p@10.0.0.5:6543/app\n") == {~c"10.0.0.5", 6543}
    assert {_host, 5432} = Health.database_target("not a url")
  end
end
