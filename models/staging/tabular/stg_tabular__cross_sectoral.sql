{#- One row per source, facility catchment and quarter; the most recently landed valid row wins. -#}
with source as (

    select
        *,
        row_number() over (
            partition by source_name, facility_code, period
            order by landed_at desc, source_file desc, cast(source_row as integer) desc
        ) as recency_rank
    from {{ source('tabular', 'cross_sectoral') }}
    where validation_status = 'valid' and not is_deleted

),

renamed as (

    select
        -- ids and codes
        facility_code as org_unit_code,
        period as period_id,
        source_name,
        source_file,
        cast(source_row as integer) as source_row,
        batch_id,

        -- descriptors
        facility_name,

        -- numerics (households, sessions, children)
        cast({{ hp_try_cast_double('households') }} as bigint) as households,
        cast({{ hp_try_cast_double('households_safe_water') }} as bigint) as households_safe_water,
        cast({{ hp_try_cast_double('households_improved_sanitation') }} as bigint)
            as households_improved_sanitation,
        cast({{ hp_try_cast_double('school_health_sessions_planned') }} as bigint)
            as school_health_sessions_planned,
        cast({{ hp_try_cast_double('school_health_sessions_held') }} as bigint)
            as school_health_sessions_held,
        cast({{ hp_try_cast_double('children_6_59m_screened_muac') }} as bigint)
            as children_6_59m_screened_muac,
        cast({{ hp_try_cast_double('sam_referred') }} as bigint) as sam_referred,
        cast({{ hp_try_cast_double('mam_referred') }} as bigint) as mam_referred,
        comment,

        -- timestamps
        landed_at

    from source
    where recency_rank = 1

)

select * from renamed
