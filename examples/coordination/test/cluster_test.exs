defmodule Coordination.ClusterTest do
  use ExUnit.Case, async: false

  alias Coordination.Cluster

  test "node names are <basename>@<ip>, deduplicated" do
    assert Cluster.node_names([{10, 0, 1, 7}, {10, 0, 1, 3}, {10, 0, 1, 7}], "coordination") ==
             [:"coordination@10.0.1.3", :"coordination@10.0.1.7"]
  end

  test "connect_all connects to every resolved peer" do
    test = self()
    resolve = fn "tasks.coordination" -> [{10, 0, 0, 2}, {10, 0, 0, 3}] end

    connect = fn node ->
      send(test, {:connect, node})
      true
    end

    peers = Cluster.connect_all("tasks.coordination", "coord", resolve, connect)
    assert peers == [:"coord@10.0.0.2", :"coord@10.0.0.3"]
    assert_received {:connect, :"coord@10.0.0.2"}
    assert_received {:connect, :"coord@10.0.0.3"}
  end

  test "the poller keeps resolving, so a replaced node is found again" do
    test = self()
    {:ok, answers} = Agent.start_link(fn -> [[{10, 0, 0, 2}], [{10, 0, 0, 9}]] end)

    resolve = fn _query ->
      Agent.get_and_update(answers, fn
        [next | rest] -> {next, rest}
        [] -> {[], []}
      end)
    end

    {:ok, pid} =
      GenServer.start_link(Cluster,
        query: "tasks.coordination",
        basename: "coord",
        interval_ms: 10,
        resolve: resolve,
        connect: fn node ->
          send(test, {:connect, node})
          true
        end,
        require_distribution: false
      )

    assert_receive {:connect, :"coord@10.0.0.2"}, 2_000
    assert_receive {:connect, :"coord@10.0.0.9"}, 2_000
    GenServer.stop(pid)
  end

  test "without CLUSTER_DNS_QUERY nothing is started" do
    assert Cluster.start_link(query: nil) == :ignore
    assert Process.whereis(Cluster) == nil
  end
end
