defmodule Coordination.HTTP.Connection do
  @moduledoc """
  One client connection: HTTP/1.1 with keep-alive and Content-Length bodies,
  parsed by the VM's own `packet: :http_bin` decoder.
  """

  alias Coordination.HTTP.{Request, Router}

  @idle_timeout_ms 60_000
  @body_timeout_ms 15_000
  @max_body_bytes 1_000_000
  @max_headers 100

  def serve(socket) do
    with :ok <- :inet.setopts(socket, packet: :http_bin) do
      case :gen_tcp.recv(socket, 0, @idle_timeout_ms) do
        {:ok, {:http_request, method, target, version}} ->
          handle_request(socket, method, target, version)

        {:ok, _not_a_request_line} ->
          send_and_close(socket, {1, 1}, 400, "malformed request line")

        {:error, _closed_or_timeout} ->
          :gen_tcp.close(socket)
      end
    else
      {:error, _closed} -> :gen_tcp.close(socket)
    end
  end

  defp handle_request(socket, method, target, version) do
    with {:ok, headers} <- read_headers(socket, %{}, 0),
         {:ok, path} <- path_of(target),
         {:ok, body} <- read_body(socket, headers, version) do
      request = Request.new(method, path, version, headers, body)
      response = with_in_flight(fn -> Router.handle(request) end)
      Coordination.Metrics.record_request(elem(response, 0))
      keep_alive = keep_alive?(version, headers) and not Coordination.Health.draining?()
      send_response(socket, request, response, keep_alive)

      if keep_alive, do: serve(socket), else: :gen_tcp.close(socket)
    else
      {:error, :closed} -> :gen_tcp.close(socket)
      {:error, status, message} -> send_and_close(socket, version, status, message)
    end
  end

  # Counted so that shutdown can wait for requests already being answered.
  defp with_in_flight(fun) do
    Coordination.Shutdown.request_started()

    try do
      fun.()
    after
      Coordination.Shutdown.request_finished()
    end
  end

  defp read_headers(_socket, _headers, count) when count > @max_headers,
    do: {:error, 431, "too many request headers"}

  defp read_headers(socket, headers, count) do
    case :gen_tcp.recv(socket, 0, @body_timeout_ms) do
      {:ok, {:http_header, _, name, _, value}} ->
        key = name |> to_string() |> String.downcase()
        read_headers(socket, Map.put(headers, key, value), count + 1)

      {:ok, :http_eoh} ->
        {:ok, headers}

      {:ok, _unexpected} ->
        {:error, 400, "malformed request header"}

      {:error, _} ->
        {:error, :closed}
    end
  end

  defp path_of({:abs_path, path}), do: {:ok, path}
  defp path_of(_other), do: {:error, 400, "only origin-form request targets are supported"}

  defp read_body(socket, headers, version) do
    cond do
      Map.has_key?(headers, "transfer-encoding") ->
        {:error, 501, "chunked request bodies are not supported; send Content-Length"}

      true ->
        case Integer.parse(Map.get(headers, "content-length", "0")) do
          {0, ""} ->
            {:ok, ""}

          {length, ""} when length > @max_body_bytes ->
            {:error, 413, "request body larger than #{@max_body_bytes} bytes"}

          {length, ""} when length > 0 ->
            maybe_continue(socket, headers, version)

            with :ok <- :inet.setopts(socket, packet: :raw),
                 {:ok, body} <- :gen_tcp.recv(socket, length, @body_timeout_ms) do
              {:ok, body}
            else
              {:error, _} -> {:error, :closed}
            end

          _ ->
            {:error, 400, "invalid Content-Length"}
        end
    end
  end

  defp maybe_continue(socket, headers, {1, 1}) do
    if String.downcase(Map.get(headers, "expect", "")) == "100-continue" do
      :gen_tcp.send(socket, "HTTP/1.1 100 Continue\r\n\r\n")
    end
  end

  defp maybe_continue(_socket, _headers, _version), do: :ok

  defp keep_alive?(version, headers) do
    connection = headers |> Map.get("connection", "") |> String.downcase()

    case version do
      {1, 1} -> connection != "close"
      _ -> connection == "keep-alive"
    end
  end

  defp send_and_close(socket, version, status, message) do
    response = Router.error(status, message)
    request = Request.new(:GET, "/", version, %{}, "")
    send_response(socket, request, response, false)
    :gen_tcp.close(socket)
  end

  defp send_response(socket, request, {status, headers, body}, keep_alive) do
    body = IO.iodata_to_binary(body)

    head = [
      "HTTP/1.1 ",
      Integer.to_string(status),
      " ",
      reason(status),
      "\r\n",
      Enum.map(headers, fn {name, value} -> [name, ": ", value, "\r\n"] end),
      "content-length: ",
      Integer.to_string(byte_size(body)),
      "\r\n",
      "connection: ",
      if(keep_alive, do: "keep-alive", else: "close"),
      "\r\n\r\n"
    ]

    payload = if request.method == "HEAD", do: head, else: [head, body]

    case :gen_tcp.send(socket, payload) do
      :ok -> :ok
      {:error, _} -> :ok
    end
  end

  defp reason(200), do: "OK"
  defp reason(201), do: "Created"
  defp reason(202), do: "Accepted"
  defp reason(400), do: "Bad Request"
  defp reason(404), do: "Not Found"
  defp reason(405), do: "Method Not Allowed"
  defp reason(409), do: "Conflict"
  defp reason(413), do: "Payload Too Large"
  defp reason(431), do: "Request Header Fields Too Large"
  defp reason(500), do: "Internal Server Error"
  defp reason(501), do: "Not Implemented"
  defp reason(503), do: "Service Unavailable"
  defp reason(_), do: "Unknown"
end
