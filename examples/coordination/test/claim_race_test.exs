defmodule Coordination.ClaimRaceTest do
  use ExUnit.Case, async: false

  import Coordination.TestClient
  alias Coordination.Work

  defp claims_total(result) do
    line = "coordination_claims_total{result=\"#{result}\"} "

    request("GET", "/metrics").body
    |> String.split("\n")
    |> Enum.find_value(fn l ->
      String.starts_with?(l, line) && l |> String.replace_prefix(line, "") |> String.to_integer()
    end)
  end

  test "hundreds of concurrent HTTP claims of one item: exactly one winner" do
    claimers = 250
    won_before = claims_total("won")
    conflict_before = claims_total("conflict")
    id = request("POST", "/work", %{"work_type" => "race"}).json["id"]

    # Every claimer connects first and then waits, so the claims really overlap.
    parent = self()

    tasks =
      for n <- 1..claimers do
        Task.async(fn ->
          socket = connect()
          send(parent, {:ready, self()})
          receive do: (:go -> :ok)

          response =
            request_on(socket, "POST", "/work/#{id}/claim", %{"agent_id" => "agent-#{n}"}, [{"connection", "close"}])

          :gen_tcp.close(socket)
          {n, response}
        end)
      end

    pids = for _ <- 1..claimers, do: receive(do: ({:ready, pid} -> pid))
    Enum.each(pids, &send(&1, :go))
    results = Task.await_many(tasks, 30_000)

    winners = for {n, %{status: 200}} <- results, do: n
    losers = for {_n, %{status: 409}} <- results, do: :lost
    assert length(winners) == 1
    assert length(losers) == claimers - 1

    [winner] = winners
    assert request("GET", "/work/#{id}").json["agent_id"] == "agent-#{winner}"
    assert claims_total("won") - won_before == 1
    assert claims_total("conflict") - conflict_before == claimers - 1
  end

  test "a thousand concurrent in-VM claims of one item: exactly one winner" do
    {:ok, %{"id" => id}} = Work.create(%{"work_type" => "race"})

    results =
      1..1_000
      |> Task.async_stream(fn n -> Work.claim(id, %{"agent_id" => "a#{n}"}) end, max_concurrency: 1_000, timeout: 30_000)
      |> Enum.map(fn {:ok, result} -> result end)

    assert Enum.count(results, &match?({:ok, _}, &1)) == 1
    assert Enum.count(results, &match?({:error, :conflict, _}, &1)) == 999
  end

  test "an item whose process crashed comes back with its last state" do
    {:ok, %{"id" => id}} = Work.create(%{"work_type" => "crash"})
    {:ok, _} = Work.claim(id, %{"agent_id" => "keeper"})
    [{pid, _}] = Registry.lookup(Coordination.Work.Registry, id)
    ref = Process.monitor(pid)
    Process.exit(pid, :kill)
    assert_receive {:DOWN, ^ref, :process, ^pid, :killed}

    # The supervisor restarts it; the claim survives, so a second owner is still refused.
    assert eventually(fn -> match?([{new, _}] when new != pid, Registry.lookup(Coordination.Work.Registry, id)) end)
    assert {:error, :conflict, _} = Work.claim(id, %{"agent_id" => "thief"})
    assert {:ok, %{"agent_id" => "keeper"}} = Work.get(id)
  end

  defp eventually(fun, tries \\ 100) do
    cond do
      fun.() ->
        true

      tries == 0 ->
        false

      true ->
        Process.sleep(10)
        eventually(fun, tries - 1)
    end
  end
end
