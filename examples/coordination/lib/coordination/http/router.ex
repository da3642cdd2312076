defmodule Coordination.HTTP.Router do
  @moduledoc """
  Maps requests to responses `{status, headers, body}`. Never raises: any
  unexpected error becomes a 500 with a message, and the connection lives on.
  """
  require Logger

  alias Coordination.{Health, JSON, Metrics, Work}
  alias Coordination.HTTP.Request

  @json [{"content-type", "application/json"}]
  @text [{"content-type", "text/plain; charset=utf-8"}]
  @prometheus [{"content-type", "text/plain; version=0.0.4; charset=utf-8"}]

  @spec handle(Request.t()) :: {pos_integer(), [{String.t(), String.t()}], iodata()}
  def handle(%Request{} = request) do
    route(request.method, request.segments, request)
  rescue
    exception ->
      Logger.error(
        "request #{request.method} #{request.path} failed: " <> Exception.format(:error, exception, __STACKTRACE__)
      )

      error(500, "internal error")
  catch
    kind, reason ->
      Logger.error("request #{request.method} #{request.path} failed: #{inspect({kind, reason})}")
      error(500, "internal error")
  end

  def error(status, message), do: json(status, %{"error" => message})

  defp json(status, value), do: {status, @json, JSON.encode_iodata(value)}

  ## Routes

  defp route(method, [], _req) when method in ["GET", "HEAD"], do: {200, @text, [Coordination.version(), "\n"]}
  defp route(method, ["health"], _req) when method in ["GET", "HEAD"], do: health()
  defp route(method, ["metrics"], _req) when method in ["GET", "HEAD"], do: {200, @prometheus, Metrics.render()}

  defp route("GET", ["work"], req),
    do: Work.list(Map.get(req.query, "status")) |> reply(200, &%{"items" => &1, "count" => length(&1)})

  defp route("POST", ["work"], req), do: with_json(req, &Work.create/1) |> reply(201, & &1)
  defp route("GET", ["work", id], _req), do: Work.get(id) |> reply(200, & &1)
  defp route("POST", ["work", id, "claim"], req), do: timed_claim(id, req)
  defp route("POST", ["work", id, "progress"], req), do: with_json(req, &Work.progress(id, &1)) |> reply(200, & &1)
  defp route("POST", ["work", id, "complete"], req), do: with_json(req, &Work.complete(id, &1)) |> reply(200, & &1)

  defp route("POST", ["debug", "load"], req) do
    if Application.get_env(:coordination, :debug, false),
      do: Coordination.Debug.load(req.query) |> reply(202, & &1),
      else: error(404, "not found: /debug/load is only available with COORDINATION_DEBUG=1")
  end

  defp route(method, segments, _req) do
    path = "/" <> Enum.join(segments, "/")

    if known_path?(segments),
      do: error(405, "method #{method} not allowed on #{path}"),
      else: error(404, "not found: #{path}")
  end

  defp known_path?(segments) do
    case segments do
      [] -> true
      [single] when single in ["health", "metrics", "work"] -> true
      ["work", _id] -> true
      ["work", _id, action] when action in ["claim", "progress", "complete"] -> true
      ["debug", "load"] -> true
      _ -> false
    end
  end

  defp health do
    {ready, status, db} = Health.report()

    body = %{
      "status" => status,
      "version" => Coordination.version(),
      "node" => Atom.to_string(node()),
      "db" => db,
      "cluster" => Enum.map(Node.list(), &Atom.to_string/1) |> Enum.sort()
    }

    json(if(ready, do: 200, else: 503), body)
  end

  defp timed_claim(id, req) do
    started = System.monotonic_time()
    result = with_json(req, &Work.claim(id, &1))

    outcome =
      case result do
        {:ok, _} -> "won"
        {:error, :conflict, _} -> "conflict"
        {:error, :not_found, _} -> "not_found"
        _ -> nil
      end

    if outcome, do: Metrics.record_claim(outcome, System.monotonic_time() - started)
    reply(result, 200, & &1)
  end

  defp with_json(%Request{body: body}, fun) do
    case JSON.decode(body) do
      {:ok, params} when is_map(params) -> fun.(params)
      {:ok, _other} -> {:error, :bad_request, "request body must be a JSON object"}
      {:error, %JSON.DecodeError{message: message}} -> {:error, :bad_request, "invalid JSON: " <> message}
    end
  end

  defp reply({:ok, value}, status, shape), do: json(status, shape.(value))
  defp reply({:error, :bad_request, message}, _status, _shape), do: error(400, message)
  defp reply({:error, :not_found, message}, _status, _shape), do: error(404, message)
  defp reply({:error, :conflict, message}, _status, _shape), do: error(409, message)
  defp reply({:error, :unavailable, message}, _status, _shape), do: error(503, message)
end
