{#- Reporting completeness and timeliness as DHIS2 counts them, per data set, org unit and
    period of the data set's own type:
    expected  1 for every org unit the data set is assigned to and that is open during the
              period, for every period from the data set's first to its last registration;
    actual    1 when a complete registration exists for that org unit and period;
    on time   1 when it was completed within timely_days after the period ended.
    These counts feed indicators through R{dataSet.METRIC} operands. -#}
{{ config(materialized='table') }}

with data_sets as (

    select data_set_id, period_type, timely_days from {{ ref('int_data_sets') }}

),

registrations as (

    select
        r.data_set_id,
        r.org_unit_id,
        r.period_id,
        min(r.completed_at) as completed_at
    from {{ ref('stg_dhis2__complete_registrations') }} as r
    where r.is_completed
    group by r.data_set_id, r.org_unit_id, r.period_id

),

reported_range as (

    select r.data_set_id, min(p.start_date) as first_start, max(p.start_date) as last_start
    from registrations as r
    join {{ ref('int_periods') }} as p on p.period_id = r.period_id
    group by r.data_set_id

),

expected as (

    select
        ds.data_set_id,
        a.org_unit_id,
        p.period_id,
        p.end_date,
        ds.timely_days
    from data_sets as ds
    join reported_range as rr on rr.data_set_id = ds.data_set_id
    join {{ ref('int_data_set_org_units') }} as a on a.data_set_id = ds.data_set_id
    join {{ ref('int_org_units') }} as ou on ou.org_unit_id = a.org_unit_id
    join {{ ref('int_periods') }} as p
        on p.period_type = ds.period_type
        and p.start_date between rr.first_start and rr.last_start
    where (ou.opened_at is null or cast(ou.opened_at as date) <= p.end_date)
      and (ou.closed_at is null or cast(ou.closed_at as date) >= p.start_date)

)

select
    e.data_set_id,
    e.org_unit_id,
    e.period_id,
    1 as expected_reports,
    case when r.org_unit_id is not null then 1 else 0 end as actual_reports,
    case
        when r.completed_at is not null
            and cast(r.completed_at as date) <= e.end_date + e.timely_days
        then 1 else 0
    end as actual_reports_on_time,
    r.completed_at
from expected as e
left join registrations as r
    on r.data_set_id = e.data_set_id
    and r.org_unit_id = e.org_unit_id
    and r.period_id = e.period_id
