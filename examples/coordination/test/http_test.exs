defmodule Coordination.HTTPTest do
  use ExUnit.Case, async: false

  import Coordination.TestClient

  test "GET / answers the version from mix.exs as plain text" do
    response = request("GET", "/")
    assert response.status == 200
    assert response.headers["content-type"] =~ "text/plain"
    assert String.trim(response.body) == Mix.Project.config()[:version]
  end

  test "GET /health reports ok, version, node, db and cluster" do
    response = request("GET", "/health")
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"

    assert response.json == %{
             "status" => "ok",
             "version" => Mix.Project.config()[:version],
             "node" => Atom.to_string(node()),
             "db" => "not_configured",
             "cluster" => []
           }
  end

  test "keep-alive serves several requests on one connection" do
    socket = connect()
    first = request_on(socket, "GET", "/health")
    second = request_on(socket, "POST", "/work", %{"work_type" => "index"})
    third = request_on(socket, "GET", "/work/#{second.json["id"]}")
    :gen_tcp.close(socket)

    assert first.status == 200 and first.headers["connection"] == "keep-alive"
    assert second.status == 201
    assert third.status == 200 and third.json["work_type"] == "index"
  end

  test "the full work lifecycle" do
    created = request("POST", "/work", %{"work_type" => "review", "description" => "check PR 7", "priority" => 3})
    assert created.status == 201
    assert %{"id" => id, "status" => "pending", "priority" => 3, "description" => "check PR 7"} = created.json

    claimed = request("POST", "/work/#{id}/claim", %{"agent_id" => "agent-a"})
    assert claimed.status == 200
    assert claimed.json["status"] == "claimed" and claimed.json["agent_id"] == "agent-a"

    other = request("POST", "/work/#{id}/claim", %{"agent_id" => "agent-b"})
    assert other.status == 409
    assert other.json["error"] =~ "agent-a"

    not_owner = request("POST", "/work/#{id}/progress", %{"agent_id" => "agent-b", "percent" => 10})
    assert not_owner.status == 409

    progressed = request("POST", "/work/#{id}/progress", %{"agent_id" => "agent-a", "percent" => 40})
    assert progressed.status == 200
    assert progressed.json["status"] == "in_progress" and progressed.json["progress"] == 40

    completed = request("POST", "/work/#{id}/complete", %{"agent_id" => "agent-a", "result" => %{"ok" => true}})
    assert completed.status == 200
    assert completed.json["status"] == "completed" and completed.json["result"] == %{"ok" => true}

    again = request("POST", "/work/#{id}/complete", %{"agent_id" => "agent-a", "result" => nil})
    assert again.status == 409

    listed = request("GET", "/work?status=completed")
    assert listed.status == 200
    assert Enum.any?(listed.json["items"], &(&1["id"] == id))
    assert listed.json["count"] == length(listed.json["items"])
    assert Enum.all?(listed.json["items"], &(&1["status"] == "completed"))
  end

  test "GET /work lists items in creation order" do
    ids = for n <- 1..3, do: request("POST", "/work", %{"work_type" => "order-#{n}"}).json["id"]
    listed = request("GET", "/work").json["items"] |> Enum.map(& &1["id"]) |> Enum.filter(&(&1 in ids))
    assert listed == ids
  end

  test "bad JSON, missing fields and unknown ids give 400/404 with a message" do
    for {method, path, body, status} <- [
          {"POST", "/work", "{not json", 400},
          {"POST", "/work", "[1,2]", 400},
          {"POST", "/work", "", 400},
          {"POST", "/work", ~S({"description": "no type"}), 400},
          {"POST", "/work", ~S({"work_type": "x", "priority": "high"}), 400},
          {"POST", "/work/nope/claim", ~S({"agent_id": "a"}), 404},
          {"POST", "/work/nope/progress", ~S({"agent_id": "a", "percent": 5}), 404},
          {"POST", "/work/nope/complete", ~S({"agent_id": "a"}), 404},
          {"GET", "/work/nope", nil, 404},
          {"GET", "/work?status=weird", nil, 400},
          {"GET", "/no/such/path", nil, 404},
          {"DELETE", "/work", nil, 405},
          {"POST", "/debug/load", nil, 404}
        ] do
      response = request(method, path, body)
      assert response.status == status, "#{method} #{path} #{inspect(body)}: got #{response.status} #{response.body}"
      assert is_binary(response.json["error"]) and response.json["error"] != ""
    end

    id = request("POST", "/work", %{"work_type" => "validate"}).json["id"]
    assert request("POST", "/work/#{id}/claim", "{}").status == 400
    assert request("POST", "/work/#{id}/progress", %{"agent_id" => "a", "percent" => 5}).status == 409
    assert request("POST", "/work/#{id}/claim", %{"agent_id" => "a"}).status == 200
    assert request("POST", "/work/#{id}/progress", %{"agent_id" => "a", "percent" => 101}).status == 400

    # The server survived all of that.
    assert request("GET", "/health").status == 200
  end

  test "malformed HTTP gets a 400 and the server keeps serving" do
    socket = connect()
    :ok = :gen_tcp.send(socket, "NOT A REQUEST\r\n\r\n")
    assert %{status: 400} = read_response(socket)
    :gen_tcp.close(socket)

    socket = connect()
    :ok = :gen_tcp.send(socket, "POST /work HTTP/1.1\r\ncontent-length: abc\r\n\r\n")
    assert %{status: 400} = read_response(socket)
    :gen_tcp.close(socket)

    assert request("GET", "/").status == 200
  end

  test "a body sent with Expect: 100-continue is read" do
    socket = connect()
    body = Coordination.JSON.encode!(%{"work_type" => "big", "description" => String.duplicate("x", 5_000)})

    :ok =
      :gen_tcp.send(
        socket,
        "POST /work HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: #{byte_size(body)}\r\n\r\n"
      )

    {:ok, continue} = :gen_tcp.recv(socket, byte_size("HTTP/1.1 100 Continue\r\n\r\n"), 5_000)
    assert continue == "HTTP/1.1 100 Continue\r\n\r\n"
    :ok = :gen_tcp.send(socket, body)
    assert %{status: 201, json: %{"work_type" => "big"}} = read_response(socket)
    :gen_tcp.close(socket)
  end

  describe "with COORDINATION_DEBUG=1" do
    setup do
      Application.put_env(:coordination, :debug, true)
      on_exit(fn -> Application.put_env(:coordination, :debug, false) end)
    end

    test "POST /debug/load burns CPU in the requested number of processes" do
      response = request("POST", "/debug/load?cpu=2&seconds=1")
      assert response.status == 202
      assert response.json == %{"cpu" => 2, "seconds" => 1}

      burners =
        Enum.filter(Process.list(), fn pid ->
          match?({:initial_call, {Coordination.Debug, _, _}}, Process.info(pid, :initial_call))
        end)

      assert length(burners) == 2

      assert request("POST", "/debug/load?cpu=0").status == 400
      assert request("POST", "/debug/load?seconds=abc").status == 400
    end
  end
end
