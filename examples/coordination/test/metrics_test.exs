defmodule Coordination.MetricsTest do
  use ExUnit.Case, async: false

  import Coordination.TestClient

  @name ~S"[a-zA-Z_:][a-zA-Z0-9_:]*"
  @sample Regex.compile!(
            "^(#{@name})(\\{[a-zA-Z_][a-zA-Z0-9_]*=\"[^\"\\\\]*\"(,[a-zA-Z_][a-zA-Z0-9_]*=\"[^\"\\\\]*\")*\\})? (-?[0-9]+(\\.[0-9]+)?(e[-+]?[0-9]+)?|\\+Inf)$"
          )

  defp scrape do
    response = request("GET", "/metrics")
    assert response.status == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    response.body
  end

  defp value(body, series) do
    body
    |> String.split("\n")
    |> Enum.find_value(fn line ->
      case String.split(line, " ") do
        [^series, number] -> number |> Float.parse() |> elem(0)
        _ -> nil
      end
    end)
  end

  test "every line is valid Prometheus text format, each family declared before its samples" do
    body = scrape()
    assert String.ends_with?(body, "\n")
    lines = body |> String.trim_trailing("\n") |> String.split("\n")

    Enum.reduce(lines, %{help: MapSet.new(), type: %{}}, fn line, seen ->
      cond do
        match = Regex.run(~r/^# HELP (#{@name}) \S.*$/, line) ->
          %{seen | help: MapSet.put(seen.help, Enum.at(match, 1))}

        match = Regex.run(~r/^# TYPE (#{@name}) (gauge|counter|histogram)$/, line) ->
          %{seen | type: Map.put(seen.type, Enum.at(match, 1), Enum.at(match, 2))}

        match = Regex.run(@sample, line) ->
          name = Enum.at(match, 1)
          family = String.replace(name, ~r/_(bucket|sum|count)$/, "")
          declared = if Map.get(seen.type, family) == "histogram", do: family, else: name
          assert MapSet.member?(seen.help, declared), "no HELP before #{line}"
          assert Map.has_key?(seen.type, declared), "no TYPE before #{line}"
          seen

        true ->
          flunk("not a valid exposition line: #{inspect(line)}")
      end
    end)
  end

  test "the documented families are present with their types" do
    body = scrape()

    for {name, type} <- [
          {"beam_memory_bytes", "gauge"},
          {"beam_process_count", "gauge"},
          {"coordination_agents_active", "gauge"},
          {"coordination_work_items", "gauge"},
          {"coordination_claims_total", "counter"},
          {"beam_cpu_seconds_total", "counter"},
          {"beam_run_queue_length", "gauge"},
          {"beam_schedulers_online", "gauge"},
          {"beam_cluster_peers", "gauge"},
          {"coordination_http_requests_total", "counter"},
          {"coordination_claim_duration_seconds", "histogram"}
        ] do
      assert body =~ "# TYPE #{name} #{type}\n"
      assert body =~ ~r/^# HELP #{name} /m
    end

    assert value(body, ~S(beam_memory_bytes{kind="total"})) > 0
    assert value(body, "beam_process_count") > 0
  end

  test "work gauges follow the items" do
    before = scrape()
    id = request("POST", "/work", %{"work_type" => "gauge"}).json["id"]
    agent = "gauge-agent-#{System.unique_integer([:positive])}"
    after_create = scrape()

    assert value(after_create, ~S(coordination_work_items{status="pending"})) ==
             value(before, ~S(coordination_work_items{status="pending"})) + 1

    assert request("POST", "/work/#{id}/claim", %{"agent_id" => agent}).status == 200
    after_claim = scrape()

    assert value(after_claim, "coordination_agents_active") == value(after_create, "coordination_agents_active") + 1

    assert value(after_claim, ~S(coordination_work_items{status="claimed"})) ==
             value(after_create, ~S(coordination_work_items{status="claimed"})) + 1

    assert request("POST", "/work/#{id}/complete", %{"agent_id" => agent, "result" => "done"}).status == 200
    after_complete = scrape()
    assert value(after_complete, "coordination_agents_active") == value(after_create, "coordination_agents_active")

    assert value(after_complete, ~S(coordination_work_items{status="completed"})) ==
             value(after_create, ~S(coordination_work_items{status="completed"})) + 1
  end

  test "the claim histogram is cumulative and agrees with its count" do
    id = request("POST", "/work", %{"work_type" => "histogram"}).json["id"]
    request("POST", "/work/#{id}/claim", %{"agent_id" => "h1"})
    request("POST", "/work/#{id}/claim", %{"agent_id" => "h2"})
    request("POST", "/work/missing/claim", %{"agent_id" => "h3"})
    body = scrape()

    buckets =
      Regex.scan(~r/^coordination_claim_duration_seconds_bucket\{le="([^"]+)"\} (\d+)$/m, body)
      |> Enum.map(fn [_, le, count] -> {le, String.to_integer(count)} end)

    assert length(buckets) == length(Coordination.Metrics.claim_buckets()) + 1
    assert {"+Inf", inf} = List.last(buckets)
    counts = Enum.map(buckets, &elem(&1, 1))
    assert counts == Enum.sort(counts)
    assert inf == value(body, "coordination_claim_duration_seconds_count")
    assert inf >= 3

    claims = for r <- ["won", "conflict", "not_found"], do: value(body, ~s(coordination_claims_total{result="#{r}"}))
    assert Enum.sum(claims) == inf
    assert value(body, "coordination_claim_duration_seconds_sum") > 0
  end

  test "HTTP answers are counted by status code" do
    request("GET", "/health")
    before = scrape()
    request("GET", "/no/such/path")
    request("GET", "/no/such/path")
    request("GET", "/")
    body = scrape()

    count = fn text, code -> value(text, ~s(coordination_http_requests_total{code="#{code}"})) || 0 end
    assert count.(body, 404) == count.(before, 404) + 2
    # The first scrape's own answer is counted once it has been sent.
    assert count.(body, 200) >= count.(before, 200) + 2
  end

  test "VM gauges: schedulers, run queue, cluster peers (none outside a cluster)" do
    body = scrape()
    assert value(body, "beam_schedulers_online") == :erlang.system_info(:schedulers_online)
    assert value(body, "beam_run_queue_length") >= 0
    assert value(body, "beam_cluster_peers") == length(Node.list())
  end

  describe "with COORDINATION_DEBUG=1" do
    setup do
      Application.put_env(:coordination, :debug, true)
      on_exit(fn -> Application.put_env(:coordination, :debug, false) end)
    end

    test "/debug/load shows as CPU time in beam_cpu_seconds_total" do
      before = value(scrape(), "beam_cpu_seconds_total")
      assert request("POST", "/debug/load?cpu=1&seconds=1").status == 202
      Process.sleep(1_200)
      after_load = value(scrape(), "beam_cpu_seconds_total")
      # One scheduler busy for a second: well over a few hundred milliseconds of CPU.
      assert after_load - before >= 0.3, "cpu seconds went from #{before} to #{after_load}"
    end
  end
end
