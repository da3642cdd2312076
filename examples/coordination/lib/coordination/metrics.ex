defmodule Coordination.Metrics do
  @moduledoc """
  Prometheus metrics in the text exposition format (version 0.0.4).

  Counters and the claim histogram live in a public ETS table updated with
  atomic `:ets.update_counter/4`, so request processes never queue behind a
  metrics process. Gauges are computed at scrape time.
  """
  use GenServer

  @table __MODULE__
  # Upper bounds in seconds; +Inf is implicit.
  @claim_buckets [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]
  @claim_results ["won", "conflict", "not_found"]

  def start_link(opts \\ []), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)

  @impl true
  def init(_opts) do
    :ets.new(@table, [:named_table, :public, :set, write_concurrency: true, read_concurrency: true])
    {:ok, nil}
  end

  def claim_buckets, do: @claim_buckets

  @doc "Records one claim attempt and how long deciding it took."
  @spec record_claim(String.t(), non_neg_integer()) :: :ok
  def record_claim(result, duration_native) when result in @claim_results do
    micros = System.convert_time_unit(duration_native, :native, :microsecond)
    seconds = micros / 1_000_000
    bump({:claims, result})
    bump(:claim_duration_count)
    bump(:claim_duration_sum_us, micros)

    # Only the first bucket that fits is bumped; the scrape makes them cumulative.
    index = Enum.find_index(@claim_buckets, &(seconds <= &1)) || length(@claim_buckets)
    bump({:claim_bucket, index})
    :ok
  end

  @doc "Counts one HTTP answer by its status code."
  @spec record_request(pos_integer()) :: :ok
  def record_request(status) when is_integer(status) do
    bump({:http, status})
    :ok
  end

  defp bump(key, by \\ 1), do: :ets.update_counter(@table, key, by, {key, 0})

  defp read(key) do
    case :ets.lookup(@table, key) do
      [{^key, value}] -> value
      [] -> 0
    end
  end

  @doc "The full scrape body."
  @spec render() :: iodata()
  def render do
    memory = :erlang.memory()
    work = Coordination.Work.Store.counts()

    [
      family(
        "beam_memory_bytes",
        "gauge",
        "Memory allocated by the Erlang VM, by kind.",
        for({kind, bytes} <- memory, do: {[kind: kind], bytes})
      ),
      family("beam_process_count", "gauge", "Number of Erlang processes alive.", [
        {[], :erlang.system_info(:process_count)}
      ]),
      family(
        "beam_cpu_seconds_total",
        "counter",
        "CPU time used by every thread of the Erlang VM, in seconds.",
        [{[], cpu_seconds()}]
      ),
      family("beam_run_queue_length", "gauge", "Processes ready to run, over every run queue.", [
        {[], :erlang.statistics(:total_run_queue_lengths_all)}
      ]),
      family("beam_schedulers_online", "gauge", "Schedulers online.", [
        {[], :erlang.system_info(:schedulers_online)}
      ]),
      family("beam_cluster_peers", "gauge", "Erlang nodes this node is connected to.", [
        {[], length(Node.list())}
      ]),
      family(
        "coordination_http_requests_total",
        "counter",
        "HTTP answers by status code.",
        for(
          {{:http, code}, count} <- :ets.match_object(@table, {{:http, :_}, :_}) |> Enum.sort(),
          do: {[code: code], count}
        )
      ),
      family(
        "coordination_agents_active",
        "gauge",
        "Distinct agents that own a claimed, unfinished work item.",
        [{[], work.agents_active}]
      ),
      family(
        "coordination_work_items",
        "gauge",
        "Work items by status.",
        for(status <- Coordination.Work.statuses(), do: {[status: status], Map.get(work.by_status, status, 0)})
      ),
      family(
        "coordination_claims_total",
        "counter",
        "Claim attempts by result (won, conflict, not_found).",
        for(result <- @claim_results, do: {[result: result], read({:claims, result})})
      ),
      claim_histogram()
    ]
  end

  # `statistics(:runtime)` sums the CPU time of every VM thread, in milliseconds.
  defp cpu_seconds do
    {total_ms, _since_last} = :erlang.statistics(:runtime)
    total_ms / 1000
  end

  defp claim_histogram do
    name = "coordination_claim_duration_seconds"

    {bucket_lines, _} =
      @claim_buckets
      |> Enum.with_index()
      |> Enum.map_reduce(0, fn {bound, index}, running ->
        running = running + read({:claim_bucket, index})
        {sample(name <> "_bucket", [le: format_number(bound)], running), running}
      end)

    count = read(:claim_duration_count)
    sum = read(:claim_duration_sum_us) / 1_000_000

    [
      "# HELP #{name} Time taken to decide a claim, in seconds.\n",
      "# TYPE #{name} histogram\n",
      bucket_lines,
      sample(name <> "_bucket", [le: "+Inf"], count),
      sample(name <> "_sum", [], sum),
      sample(name <> "_count", [], count)
    ]
  end

  defp family(name, type, help, samples) do
    [
      "# HELP #{name} #{help}\n",
      "# TYPE #{name} #{type}\n",
      for({labels, value} <- samples, do: sample(name, labels, value))
    ]
  end

  defp sample(name, [], value), do: [name, " ", format_number(value), "\n"]

  defp sample(name, labels, value) do
    rendered = Enum.map_join(labels, ",", fn {key, val} -> "#{key}=\"#{escape_label(to_string(val))}\"" end)
    [name, "{", rendered, "} ", format_number(value), "\n"]
  end

  defp escape_label(text) do
    text |> String.replace("\\", "\\\\") |> String.replace("\"", "\\\"") |> String.replace("\n", "\\n")
  end

  defp format_number(value) when is_integer(value), do: Integer.to_string(value)
  defp format_number(value) when is_float(value), do: :erlang.float_to_binary(value, [:short])
  defp format_number(value) when is_binary(value), do: value
end
