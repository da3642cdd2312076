defmodule Coordination.Debug do
  @moduledoc """
  `POST /debug/load?cpu=N&seconds=S` (only with `COORDINATION_DEBUG=1`):
  keeps N schedulers busy for S seconds so a CPU alert can be made to fire
  in a test. Defaults: cpu = number of online schedulers, seconds = 30.
  """

  @max_seconds 600

  def load(query) do
    with {:ok, cpu} <- bounded(query, "cpu", :erlang.system_info(:schedulers_online), 1, 64),
         {:ok, seconds} <- bounded(query, "seconds", 30, 1, @max_seconds) do
      deadline = System.monotonic_time(:millisecond) + seconds * 1_000
      for _ <- 1..cpu, do: spawn(__MODULE__, :burn, [deadline])
      {:ok, %{"cpu" => cpu, "seconds" => seconds}}
    end
  end

  defp bounded(query, key, default, min, max) do
    case Map.get(query, key) do
      nil ->
        {:ok, default}

      text ->
        case Integer.parse(text) do
          {value, ""} when value >= min and value <= max -> {:ok, value}
          _ -> {:error, :bad_request, "#{key} must be an integer from #{min} to #{max}"}
        end
    end
  end

  @doc false
  # Public so the burners are recognisable by their initial call.
  def burn(deadline) do
    if System.monotonic_time(:millisecond) < deadline do
      # A chunk of pure work between clock checks; the VM still preempts us.
      Enum.reduce(1..10_000, 0, fn i, acc -> rem(acc + i * i, 1_000_003) end)
      burn(deadline)
    end
  end
end
